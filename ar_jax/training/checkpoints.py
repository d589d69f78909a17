"""Checkpoints through orbax's CheckpointManager: atomic saves, the newest K and the best by validation, restore by
shape, and the Grain data iterator's position beside the train state (an orbax Composite of two items)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy, save_decision_policy

CHECKPOINT_DIR = "checkpoints"
STATE_ITEM = "default"  # the train state's item: the directory orbax used for single-item checkpoints
DATA_ITEM = "data"  # the data iterator's item (Grain's handler: one process_<i>-of-<n>.json per process)
BEST_METRIC = "validation"  # key of a checkpoint's metrics that ranks it (lower is better)


def _validation(metrics: dict) -> float:
    return float(metrics[BEST_METRIC])


class _NoMetricsWarning(logging.Filter):
    """Orbax warns at every save without metrics when best_fn is set; here most saves have none by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricsWarning())


class Checkpointer:
    """Saves and restores a train-state pytree under `workdir/checkpoints/<step>`.

    Orbax's preservation policies keep the newest `keep` checkpoints (resume reads the latest) and, beside them, the
    one with the lowest `metrics["validation"]` (its `best_fn`, `best_mode="min"`); saves without metrics are never
    the best. `best_step()` and `metrics(step)` read what is on disk, so a resumed run still knows the best. A save
    may carry the data iterator's state (`data=`, Grain's checkpoint handler); `restore_data` reads it back. Saves
    and preemption are agreed by every host (`should_save`, `reached_preemption`: orbax's multi-host sync point).
    """

    def __init__(self, workdir: str | Path, keep: int = 2, save_every: int = 1):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        policy = preservation_policy.AnyPreservationPolicy([
            preservation_policy.LatestN(n=keep),
            preservation_policy.BestN(get_metric_fn=_validation, reverse=True, n=1,
                                      keep_checkpoints_without_metrics=False)])
        saves = save_decision_policy.AnySavePolicy([save_decision_policy.FixedIntervalPolicy(save_every),
                                                    save_decision_policy.PreemptionCheckpointingPolicy()])
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                create=True, save_decision_policy=saves, best_fn=_validation, best_mode="min",
                preservation_policy=policy),
            item_handlers={STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                           DATA_ITEM: grain.checkpoint.CheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        """The step whose checkpoint has the lowest validation metric, or None when no checkpoint has one."""
        return self.manager.best_step()

    def metrics(self, step: int) -> dict | None:
        """The metrics saved with the checkpoint at `step` (`{"validation": ..., ...}`), or None."""
        return self.manager.metrics(step)

    def save(self, step: int, state: Any, metrics: dict[str, float] | None = None, data: Any = None) -> None:
        """Start an (async) save at `step`, with `metrics` (`{"validation": ...}` ranks it) and the data iterator's
        state `data` (a Grain iterator, or `pipeline.DataState`); a step already saved is skipped, unless it lacks the
        metrics now given, in which case it is saved again with them."""
        if step in self.manager.all_steps():
            if metrics is None or self.metrics(step) is not None:
                return
            self.manager.wait_until_finished()
            self.manager.delete(step)  # orbax cannot add metrics to a saved step; the state is the same
        items = {STATE_ITEM: ocp.args.PyTreeSave(state)}
        if data is not None:
            items[DATA_ITEM] = grain.checkpoint.CheckpointSave(data)
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def should_save(self, step: int) -> bool:
        """Whether every host saves at `step` now: orbax's decision, which includes the preemption sync point."""
        return self.manager.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        """True on every host at the same step once any host was told to stop (SIGTERM; jax.distributed runs)."""
        return self.manager.reached_preemption(step)

    def restore_data(self, step: int, iterator: Any) -> bool:
        """Set `iterator` to the position saved with `step`; False (iterator untouched) when the checkpoint has no
        data state for this process (saved before the Grain loader, or by another number of processes)."""
        directory = self.directory / str(step) / DATA_ITEM
        if not directory.is_dir():
            return False
        try:
            self.manager.restore(step, args=ocp.args.Composite(**{DATA_ITEM: grain.checkpoint.CheckpointRestore(
                iterator)}))
        except Exception as e:  # noqa: BLE001 - e.g. saved by another number of processes: the caller repositions
            logging.warning("checkpoint %s has no data state for this process (%s).", directory, e)
            return False
        return True

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None) -> Any:
        """Restore onto `target`'s structure, shapes and shardings (arrays or ShapeDtypeStructs).

        A checkpoint that is unreadable falls back to the previous one (logged with its path); one whose
        shapes do not match the target raises ValueError naming the parameter and both shapes.
        """
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        if not steps:
            raise ValueError(f"no checkpoint in {self.directory}.")
        abstract = jax.tree.map(_abstract, target)
        for s in steps:
            self._check_shapes(s, abstract)
            try:
                return self.manager.restore(s, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(
                    item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract))}))[STATE_ITEM]
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to an older one
                self._quarantine(s, e)
        raise ValueError(f"no readable checkpoint in {self.directory} (tried steps {steps}).")

    def _quarantine(self, step: int, error: Exception) -> None:
        """Move an unreadable checkpoint aside (never deleted) so that training can save that step again."""
        src = self.directory / str(step)
        dst = self.directory / f"unreadable_{step}_{int(time.time())}"
        logging.warning("checkpoint %s is unreadable (%s: %s); it is moved to %s and the previous one is used.",
                        src, type(error).__name__, str(error)[:300], dst)
        if jax.process_index() == 0 and src.exists():
            src.rename(dst)
        self.manager.reload()

    def restore_params(self, params_target: Any, step: int | None = None, item: str = "params") -> Any:
        """Only `item` ("params" or "ema_params") of a saved train state (no optimizer state is read)."""
        steps = sorted(self.manager.all_steps(), reverse=True) if step is None else [step]
        abstract = {item: jax.tree.map(_abstract, params_target)}
        for s in steps:
            self._check_shapes(s, abstract, partial=True)
            try:
                out = self.manager.restore(s, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.PyTreeRestore(
                    item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                    partial_restore=True)}))
                return out[STATE_ITEM][item]
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint: fall back to an older one
                logging.warning("checkpoint %s is unreadable (%s: %s); trying the previous one.",
                                self.directory / str(s), type(e).__name__, str(e)[:300])
        raise ValueError(f"no readable checkpoint in {self.directory} (tried steps {steps}).")

    def _check_shapes(self, step: int, abstract: Any, partial: bool = False) -> None:
        try:
            meta = self.manager.item_metadata(step)[STATE_ITEM]
        except Exception:  # noqa: BLE001 - unreadable metadata is handled by restore's fallback
            return
        if meta is None:
            return
        saved = {_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(meta)[0]}
        want = {_name(k): v for k, v in jax.tree_util.tree_flatten_with_path(abstract)[0]}
        missing = sorted(set(want) - set(saved))
        extra = [] if partial else sorted(set(saved) - set(want))
        if missing or extra:
            raise ValueError(f"checkpoint {self.directory / str(step)} does not match the model built from the "
                             f"config: missing {missing[:5]}, unexpected {extra[:5]}. Train into a new --workdir, "
                             "or pass the config this workdir was trained with.")
        for k, w in want.items():
            shape = tuple(getattr(saved[k], "shape", ()) or ())
            if shape != tuple(w.shape):
                raise ValueError(f"checkpoint {self.directory / str(step)} holds {k} with shape {shape}, but the "
                                 f"config builds {tuple(w.shape)}. Train into a new --workdir, or pass the config "
                                 "this workdir was trained with.")

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x


def _name(path: tuple) -> str:
    """A key path as `a/b/0/c`, the same for dicts, dataclasses and (named) tuples."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return "/".join(parts)
