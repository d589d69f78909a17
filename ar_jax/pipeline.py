"""The public surface: `pipe = ar_jax.load(workdir)`, then `pipe.sample(...)` / `pipe.bits_per_dim(...)`, and for a
run trained both ways `pipe.caption(images)` / `pipe.caption_logprob(images, captions)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ar_jax import builders, decode
from ar_jax.config import read_config
from ar_jax.decode import captioning
from ar_jax.evaluation.likelihood import bits_per_dim
from ar_jax.models import conditions
from ar_jax.models.transformer import DecodingCache, TransformerConfig, param_shapes


def exact_likelihood(model_config: Any) -> bool:
    """False for families whose `token_nll` is not an exact likelihood (MaskGIT's is a masked-token NLL)."""
    return model_config.exact_likelihood


class ARPipeline:
    """A trained AR run: its config, tokenizer, model config and parameters (a palette run needs its workdir, or
    its tokenizer; a text run its workdir, or its text tokenizer).

    Every method takes the condition the same way: class `labels` for a class-conditional run, `prompts` (a list
    of strings) for a text-conditioned one; the other is refused before anything is compiled. Sampling also takes
    `cond=`, a condition made already (`ar_jax.models.conditions`): a caption-feature run's (LlamaGen t2i)
    `{"features": [B, C, F], "mask": [B, C]}`.
    """

    def __init__(self, config: ml_collections.ConfigDict, params: Any, workdir: str | Path | None = None,
                 tokenizer: Any = None, text_tokenizer: Any = None):
        self.config = config
        self.tokenizer = tokenizer or builders.make_tokenizer(config, workdir)
        self.text_tokenizer = text_tokenizer or builders.make_text_tokenizer(config, workdir)
        self.model_config = builders.make_model_config(config, self.tokenizer, text_tokenizer=self.text_tokenizer)
        self.params = params
        self.medusa = None  # Medusa heads (`ar_jax.models.medusa`), when loaded from a Medusa run's workdir
        self._decoding = DecodingCache()

    def condition(self, labels: Any = None, prompts: Any = None, cond: Any = None) -> Any:
        """The model's condition for `labels` or `prompts` (checked: `ar_jax.models.conditions.make`), or `cond`
        itself, checked (`conditions.check`)."""
        if cond is None:
            return conditions.make(self.model_config, labels, prompts, self.text_tokenizer)
        if labels is not None or prompts is not None:
            raise ValueError("pass one of labels, prompts or cond, not several.")
        return conditions.check(self.model_config, cond)

    def for_decoding(self) -> tuple[Any, Any]:
        """`(model config, params)` as sampling reads them fastest (a transformer's weights prepared by the backend
        of the device they live on, `transformer.prepare`), made once per `self.params` object and kept."""
        if not isinstance(self.model_config, TransformerConfig):
            return self.model_config, self.params
        return self.model_config, self._decoding.get(self.params)

    def sample_tokens(self, labels: Any = None, seed: int = 0, prefix: Any = None, *, prompts: Any = None,
                      cond: Any = None, method: str | None = None, **overrides: Any) -> jax.Array:
        """Image tokens `[B, seq_len]`; sampling settings default to `config.sampling`. `method`: "plain" (one token
        a forward pass) or "medusa" (the heads of a Medusa run propose, the model verifies: the same distribution);
        None: "medusa" where heads are loaded, else "plain"."""
        method = method or ("plain" if self.medusa is None else "medusa")
        if method not in ("plain", "medusa") or (method == "medusa" and self.medusa is None):
            raise ValueError(f"method={method!r}: use 'plain', or 'medusa' with a pipeline loaded from a Medusa run "
                             "(ar_jax.load of a workdir trained with configs/scenes_t2i_medusa.py).")
        cond = self.condition(labels, prompts, cond)
        settings = {**self.config.sampling.to_dict(), **overrides}
        known = set(decode.settings(self.model_config))
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {sorted(unknown)}; use {', '.join(sorted(known))}.")
        cfg, params = self.for_decoding()
        if method == "medusa":
            from ar_jax.decode import medusa

            if prefix is not None or settings.pop("repetition_penalty", 1.0) != 1.0:
                raise ValueError("Medusa decoding takes no prefix and no repetition penalty; pass method='plain'.")
            return medusa.generate(params, cfg, self.medusa, cond, jax.random.key(seed), **settings)[0]
        return decode.generate(params, cfg, cond, jax.random.key(seed), prefix=prefix, **settings)

    def sample(self, labels: Any = None, seed: int = 0, *, prompts: Any = None, cond: Any = None,
               method: str | None = None, **overrides: Any) -> np.ndarray:
        """uint8 images `[B, H, W, C]` of classes `labels [B]` (or for `prompts`, or `cond`); a fixed seed gives the
        same images. `method`: as `sample_tokens`."""
        return self.tokenizer.decode(np.asarray(self.sample_tokens(labels, seed, prompts=prompts, cond=cond,
                                                                   method=method, **overrides)))

    def complete(self, images: Any, num_known_rows: int, labels: Any = None, seed: int = 0, *, prompts: Any = None,
                 **overrides: Any) -> np.ndarray:
        """Keep the first `num_known_rows` rows of `images [B, H, W, C]` and sample the rest."""
        tokens = self.tokenizer.encode(images)
        rows, per_row = self.tokenizer.grid
        if not 0 < num_known_rows < rows:
            raise ValueError(f"num_known_rows={num_known_rows} must be in [1, {rows - 1}] for {rows}-row images.")
        prefix = tokens[:, : num_known_rows * per_row]
        return self.tokenizer.decode(np.asarray(self.sample_tokens(labels, seed, prefix=prefix, prompts=prompts,
                                                                   **overrides)))

    def inpaint(self, images: Any, known: Any, labels: Any = None, seed: int = 0, *, prompts: Any = None,
                **overrides: Any) -> np.ndarray:
        """Keep the tokens of `images [B, H, W, C]` where `known` (bool over the token grid, `[B, rows, cols]` or
        `[B, seq_len]`) is true and sample the others (MaskGIT runs: `config.model.family="maskgit"`)."""
        if "known" not in decode.settings(self.model_config):
            raise ValueError("inpainting needs a MaskGIT run (config.model.family='maskgit', e.g. "
                             "configs/digits_maskgit.py); an AR run completes a prefix: use pipe.complete.")
        tokens = self.tokenizer.encode(images)
        known = np.asarray(known)
        if known.shape[0] != tokens.shape[0] or known[0].size != tokens.shape[1]:
            raise ValueError(f"known must be a mask over the token grid, [B={tokens.shape[0]}, {self.tokenizer.grid}] "
                             f"or [B, {tokens.shape[1]}], got shape {known.shape}.")
        return self.tokenizer.decode(np.asarray(self.sample_tokens(
            labels, seed, prompts=prompts, given=tokens, known=known.reshape(tokens.shape), **overrides)))

    def _tokens_and_condition(self, images: Any, labels: Any, prompts: Any) -> tuple[np.ndarray, Any]:
        tokens = self.tokenizer.encode(images)
        cond = self.condition(labels, prompts)
        if conditions.batch_size(cond) != tokens.shape[0]:
            raise ValueError(f"got {tokens.shape[0]} images but {conditions.batch_size(cond)} labels or prompts; "
                             "pass one label per image (or one prompt per image).")
        return tokens, cond

    def bits_per_dim(self, images: Any, labels: Any = None, *, prompts: Any = None) -> np.ndarray:
        """Exact NLL of uint8 `images [B, H, W, C]` given `labels [B]` (or `prompts`), in bits per dimension, `[B]`."""
        if not exact_likelihood(self.model_config):
            raise ValueError(f"a {self.config.model.family!r} run has no exact likelihood, so no bits/dim; use "
                             "pipe.masked_bits_per_token(images, labels) (NLL of masked tokens given the others).")
        tokens, cond = self._tokens_and_condition(images, labels, prompts)
        return bits_per_dim(self.params, self.model_config, tokens, cond, int(np.prod(self.tokenizer.image_shape)))

    def masked_bits_per_token(self, images: Any, labels: Any = None, *, prompts: Any = None) -> np.ndarray:
        """MaskGIT's deterministic masked-token NLL (`ar_jax/models/maskgit.py`) in bits per masked token, `[B]`."""
        if exact_likelihood(self.model_config):
            raise ValueError("masked_bits_per_token is MaskGIT's measure; this run has an exact likelihood: use "
                             "pipe.bits_per_dim.")
        tokens, cond = self._tokens_and_condition(images, labels, prompts)
        return bits_per_dim(self.params, self.model_config, tokens, cond, self.model_config.seq_len)


    def image_tokens(self, images: Any) -> np.ndarray:
        """Tokens `[B, seq_len]` of uint8 `images [B, H, W, C]` (or a list of `[H, W, C]`), or ValueError naming the
        shape this run's tokenizer takes."""
        H, W, C = self.tokenizer.image_shape
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError(f"no images given; pass uint8 images [B >= 1, {H}, {W}, {C}].")
            bad = [i for i, x in enumerate(images) if np.shape(x) != (H, W, C)]
            if bad:
                raise ValueError(f"image {bad[0]} has shape {np.shape(images[bad[0]])}; this run takes uint8 images "
                                 f"[{H}, {W}, {C}] ({H}x{W}, {C} channels): resize or convert it.")
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (H, W, C) or len(images) == 0:
            raise ValueError(f"images have shape {images.shape}; this run takes uint8 images [B >= 1, {H}, {W}, {C}] "
                             f"({H}x{W}, {C} channels): resize or convert them.")
        if images.dtype != np.uint8:
            raise ValueError(f"images have dtype {images.dtype}; pass uint8 values in 0..255.")
        return np.asarray(self.tokenizer.encode(images)).reshape(len(images), -1)

    def caption(self, images: Any, seed: int = 0, *, greedy: bool = True, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, return_logprob: bool = False) -> list[str] | tuple[list[str], np.ndarray]:
        """A caption of each uint8 image `[B, H, W, C]` (a run trained both ways: `config.model.text_head`): greedy,
        or sampled (`greedy=False`) with temperature, top-k, top-p; a fixed seed gives the same captions. With
        `return_logprob`, also log p(ids | image) in nats `[B]` of the very ids decoded (and their end, where one was
        emitted): text re-encoded by the tokenizer need not give the same ids."""
        captioning.check_model(self.model_config)
        tokens = self.image_tokens(images)
        cfg, params = self.for_decoding()
        bos, eos = self.text_tokenizer.bos_id, self.text_tokenizer.eos_id
        ids = np.asarray(captioning.caption(params, cfg, tokens, jax.random.key(seed), bos_id=bos, eos_id=eos,
                                            greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p))
        texts = self.text_tokenizer.decode(ids)
        if not return_logprob:
            return texts
        text = np.concatenate([np.full((len(ids), 1), bos, np.int32), ids.astype(np.int32)], axis=1)
        return texts, captioning.caption_logprob(self.params, self.model_config, tokens, text)

    def caption_logprob(self, images: Any, captions: Any) -> np.ndarray:
        """log p(caption | image) in nats `[B]` (the caption's tokens and its end, teacher-forced), one caption per
        uint8 image `[B, H, W, C]`: rank candidate captions of an image by it (zero-shot recognition)."""
        captioning.check_model(self.model_config)
        tokens = self.image_tokens(images)
        if isinstance(captions, str) or len(captions) != len(tokens):
            raise ValueError(f"got {len(tokens)} images but {1 if isinstance(captions, str) else len(captions)} "
                             "captions; pass a list with one caption per image (repeat an image to score several).")
        ids = self.text_tokenizer.check_length(list(captions), self.model_config.text_len)
        text = self.text_tokenizer.pad_caption(ids, self.model_config.text_len)
        return captioning.caption_logprob(self.params, self.model_config, tokens, text)


def restore_params(workdir: str | Path, model_config: Any, item: str = "params", step: int | None = None) -> Any:
    """The parameters (or their EMA: `item="ema_params"`) of the checkpoint at `step` of `workdir` (None: the latest
    readable one), checked against `model_config`."""
    from ar_jax.training.checkpoints import Checkpointer

    ckpt = Checkpointer(workdir)
    if ckpt.latest_step() is None:
        raise ValueError(f"{workdir!r} has a config but no checkpoint yet; train it first.")
    target = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), param_shapes(model_config))
    params = ckpt.restore_params(target, step=step, item=item)
    ckpt.close()
    return params


def load(workdir: str | Path, weights: str = "default") -> Any:
    """Config + a checkpoint of the run in `workdir`: an `ARPipeline`, or a `VQPipeline` for a tokenizer run.

    `weights`: "best" (the checkpoint with the lowest validation bits/dim, kept by training when
    `config.validation_fraction > 0`), "latest" (the newest checkpoint, what a resumed run continues from), both
    with the EMA weights when the run kept them; "raw" (the latest's non-EMA weights); "ema" (the latest's EMA
    weights, refused without); "default": "best" where the run has a validation metric, else "latest".
    `pipe.weights` says which were read, e.g. "best: step 750 of 1500 (val_bits_per_dim_ema 1.7012), EMA weights".
    """
    from ar_jax.training.checkpoints import BEST_METRIC, Checkpointer

    config = read_config(workdir)
    if config.kind == "vq":  # a tokenizer run: pipe.encode(images) -> codes, pipe.decode(codes) -> images
        from ar_jax.tokenizers.vq_tokens import load_vq

        return load_vq(workdir)
    if config.kind == "medusa":  # heads for a frozen AR run: that run's pipeline, sampling with them
        return _load_medusa(workdir, config, weights)
    if config.kind != "ar":
        raise ValueError(f"{workdir!r} holds a run of kind {config.kind!r}; ar_jax.load knows 'ar', 'vq' and "
                         "'medusa'.")
    choices = ("default", "best", "latest", "raw", "ema")
    if weights not in choices:
        raise ValueError(f"weights={weights!r} must be one of {', '.join(map(repr, choices))}: 'best' (lowest "
                         "validation bits/dim), 'latest' (what resume uses), 'raw' (the latest's non-EMA weights).")
    has_ema = config.get("ema_decay", 0.0) > 0
    if weights == "ema" and not has_ema:
        raise ValueError(f"{workdir!r} was trained without EMA (config.ema_decay=0); use weights='latest' or 'raw'.")
    ckpt = Checkpointer(workdir)
    latest, best = ckpt.latest_step(), ckpt.best_step()
    ranked = ckpt.metrics(best) if best is not None else None
    ckpt.close()
    if latest is not None and weights == "best" and best is None:
        raise ValueError(f"{workdir!r} has no checkpoint with a validation metric (trained with "
                         "config.validation_fraction=0, or before validation splits); use weights='latest'.")
    use_best = best is not None and weights in ("best", "default")
    item = "ema_params" if has_ema and weights != "raw" else "params"
    kind = "EMA" if item == "ema_params" else "raw"
    if use_best:
        name = next((k for k in ranked if k.startswith("val_")), BEST_METRIC)
        about = f"best: step {best} of {latest} ({name} {ranked[BEST_METRIC]:.4f}), {kind} weights"
    else:
        about = f"latest: step {latest}, {kind} weights"
    tokenizer = builders.make_tokenizer(config, workdir)
    text_tokenizer = builders.make_text_tokenizer(config, workdir)
    model_config = builders.make_model_config(config, tokenizer, text_tokenizer=text_tokenizer)
    pipe = ARPipeline(config, restore_params(workdir, model_config, item=item, step=best if use_best else None),
                      tokenizer=tokenizer, text_tokenizer=text_tokenizer)
    pipe.weights = about  # which checkpoint and weights were read (scripts print it)
    return pipe


def _load_medusa(workdir: str | Path, config: ml_collections.ConfigDict, weights: str) -> ARPipeline:
    """The base run of a Medusa run (`config.base_workdir`, `weights` of it) with the heads of `workdir` attached."""
    from ar_jax.models import medusa
    from ar_jax.training.checkpoints import Checkpointer

    pipe = load(config.base_workdir, weights)
    ckpt = Checkpointer(workdir)
    step = ckpt.latest_step()
    if step is None:
        raise ValueError(f"{workdir!r} has a config but no checkpoint yet; train it first.")
    abstract = jax.eval_shape(lambda p: medusa.init_heads(pipe.model_config, p, config.medusa.num_heads,
                                                          config.medusa.sequential, config.medusa.width),
                              pipe.params)
    pipe.medusa = ckpt.restore_params(jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract))
    ckpt.close()
    pipe.weights += f"; Medusa heads: step {step} of {workdir}"
    return pipe
