"""Driver for the two-process tests: `python tests/multiprocess_run.py PORT PROCESS_ID WORKDIR [SHARDS [STEPS]]`.

Each process has 2 forced CPU devices; jax.distributed joins them into one 4-device mesh over 127.0.0.1. With
SHARDS the run reads those token shards through Grain, and each process saves the tokens of the rows it read
(`WORKDIR/rows_<process>.npy`, `[steps, batch / 2, T]`).
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))


def main(port: str, pid: str, workdir: str, shards: str = "", steps: str = "") -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
    from ar_jax.training import trainer
    from ar_jax.training.metrics import read_metrics
    from tests.sharded_run import config

    rows, real = [], trainer.next_batch

    def recording(loader, mesh, step):
        batch = real(loader, mesh, step)
        local = sorted(batch["tokens"].addressable_shards, key=lambda s: s.index[0].start)
        rows.append(np.concatenate([np.asarray(s.data) for s in local]))
        return batch

    trainer.next_batch = recording
    c = config((-1, 1, 1))
    c.loader.shards = shards
    if steps:
        c.num_train_steps = int(steps)
    trainer.train_and_evaluate(c, workdir)
    np.save(Path(workdir) / f"rows_{jax.process_index()}.npy", np.stack(rows))
    if jax.process_index() == 0:
        out = {"devices": jax.device_count(), "processes": jax.process_count(),
               "losses": [m["loss"] for m in read_metrics(workdir) if "loss" in m]}
        (Path(workdir) / "multiprocess.json").write_text(json.dumps(out))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
