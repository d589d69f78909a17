"""What the demo page does, without the page: one run loaded and compiled once, requests checked and answered.

`DemoService(workdir)` reads the run it was started with (never a path a request names); `generate` answers a
prompt box or a class pick with images, `caption` an uploaded image with captions and their log-probabilities.
Every request is bounded by `max_batch` images and every refusal is the library's own `ValueError` message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ar_jax import builders
from ar_jax.pipeline import load

METHODS = ("plain", "speculative", "medusa", "maskgit")  # decoding methods a run may offer (`DemoService.methods`)


@dataclasses.dataclass(frozen=True)
class Answer:
    """Images `[N, H, W, C]` uint8 (or captions `[(text, log p)]`) and a status line for the page."""

    images: np.ndarray | None = None
    captions: list[tuple[str, float]] | None = None
    status: str = ""


def device_name() -> str:
    """The device the run's arrays live on, in words (e.g. "cpu (TFRT_CPU_0)", "gpu (NVIDIA H100 80GB HBM3)")."""
    d = jax.devices()[0]
    return f"{d.platform} ({getattr(d, 'device_kind', str(d))})"


class DemoService:
    """One run, loaded once: `kind` is "text", "class" or "caption" (a caption-feature run has no demo); `methods`
    lists the decoding methods it offers; `warm_up()` compiles the default request."""

    def __init__(self, workdir: str | Path, *, max_batch: int = 16, draft_workdir: str | Path | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch} must be >= 1 (the most images one request may ask for).")
        self.workdir, self.max_batch = Path(workdir), int(max_batch)
        self.pipe = load(self.workdir)
        cfg = self.pipe.model_config
        self.kind = builders.condition_of(self.pipe.config)
        if self.kind == "caption":
            raise ValueError(f"{workdir} is a caption-feature run (LlamaGen t2i: T5 features, not prompts); the demo "
                             "serves class-conditional and text runs: sample it with sample.py --caption_embeddings.")
        self.captions = bool(getattr(cfg, "text_head", False))
        family = self.pipe.config.model.get("family", "transformer")
        self.methods = ["maskgit"] if family == "maskgit" else ["plain"]
        if getattr(self.pipe, "medusa", None) is not None:  # a Medusa run: its heads propose, the run verifies
            self.methods.insert(0, "medusa")
        self.draft = None
        if draft_workdir is not None:
            from ar_jax.decode import speculative

            if family == "maskgit":
                raise ValueError("--draft_workdir: speculative decoding needs an autoregressive run, this is MaskGIT.")
            self.draft = load(draft_workdir)
            speculative.check_draft(cfg, self.draft.model_config)
            self.methods.append("speculative")
        self.num_classes = int(getattr(cfg, "num_classes", 0)) if self.kind == "class" else 0

    @property
    def about(self) -> str:
        """The page's header line: which run, model, checkpoint and device."""
        cfg = self.pipe.model_config
        n = sum(int(np.size(x)) for x in jax.tree.leaves(self.pipe.params))
        shape = "x".join(map(str, self.pipe.tokenizer.image_shape))
        what = {"text": "text-to-image" + (" and image-to-text" if self.captions else ""),
                "class": f"class-conditional ({self.num_classes} classes)"}.get(self.kind, self.kind)
        family = self.pipe.config.model.get("family", "transformer")
        size = (f" ({cfg.num_layers} layers, width {cfg.dim})" if hasattr(cfg, "num_layers") and hasattr(cfg, "dim")
                else "")
        return (f"**{self.workdir.name}**: {what}, a {family} of {n / 1e6:.2f} M parameters{size}, "
                f"{shape} images; checkpoint {self.pipe.weights}; device {device_name()}.")

    def defaults(self) -> dict[str, Any]:
        """The run's own sampling settings (`config.sampling`), which the page starts from."""
        s = self.pipe.config.sampling
        return dict(cfg_scale=float(s.get("cfg_scale", 1.0)), temperature=float(s.get("temperature", 1.0)),
                    top_k=int(s.get("top_k", 0)), top_p=float(s.get("top_p", 1.0)))

    def warm_up(self) -> None:
        """Compile the default request (one full batch, the run's settings) before the page serves anyone."""
        first = "a" if self.kind == "text" else "0"
        self.generate(first, 1, seed=0, **self.defaults())
        if self.captions:
            h, w, c = self.pipe.tokenizer.image_shape
            self.caption(np.zeros((h, w, c), np.uint8), 1)

    def _condition(self, request: str, per_condition: int) -> tuple[dict[str, Any], int]:
        """The request's prompts (one a line) or class labels (comma-separated), each repeated `per_condition`
        times, as `pipe.sample`'s keyword, and the number of images."""
        if per_condition < 1:
            raise ValueError(f"images per prompt={per_condition} must be >= 1.")
        if self.kind == "text":
            rows = [line.strip() for line in str(request).splitlines() if line.strip()]
            what = "prompt"
        else:
            rows = [x.strip() for x in str(request).replace("\n", ",").split(",") if x.strip()]
            what = "class"
            bad = [x for x in rows if not x.lstrip("-").isdigit()]
            if bad:
                raise ValueError(f"class {bad[0]!r} is not a number; pick classes 0..{self.num_classes - 1}.")
            rows = [int(x) for x in rows]
        if not rows:
            raise ValueError(f"no {what} given; write at least one {what}.")
        n = len(rows) * per_condition
        if n > self.max_batch:
            raise ValueError(f"{len(rows)} {what}(s) x {per_condition} images = {n} images, more than this server's "
                             f"limit of {self.max_batch}; ask for fewer (the limit is set by --max_batch).")
        rows = [r for r in rows for _ in range(per_condition)]
        return ({"prompts": rows} if self.kind == "text" else {"labels": rows}), n

    def generate(self, request: str, per_condition: int, *, seed: int = 0, method: str | None = None,
                 cfg_scale: float = 1.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> Answer:
        """Images for `request` (prompts one a line, or class labels), `per_condition` each; the batch is padded to
        `max_batch` rows so every request runs the program compiled at start-up."""
        method = method or self.methods[0]
        if method not in self.methods:
            raise ValueError(f"method {method!r} is not offered by this run; use one of {self.methods}"
                             + (" (speculative needs --draft_workdir)" if method == "speculative" else "") + ".")
        cond, n = self._condition(request, int(per_condition))
        key = next(iter(cond))
        padded = {key: cond[key] + [cond[key][0]] * (self.max_batch - n)}
        settings = dict(cfg_scale=float(cfg_scale), temperature=float(temperature), top_k=int(top_k),
                        top_p=float(top_p))
        if method == "speculative":
            images = self._speculative(padded, int(seed), settings)
        elif method == "maskgit":
            images = self.pipe.sample(seed=int(seed), **padded, **settings)
        else:
            images = self.pipe.sample(seed=int(seed), **padded, **settings, method=method)
        return Answer(images=np.asarray(images)[:n], status=f"{n} image(s), seed {int(seed)}, {method} decoding.")

    def _speculative(self, cond: dict[str, Any], seed: int, settings: dict[str, Any]) -> np.ndarray:
        from ar_jax.decode import speculative

        made = self.pipe.condition(**cond)
        tokens, _ = speculative.generate(self.pipe.params, self.pipe.model_config, self.draft.params,
                                         self.draft.model_config, made, jax.random.key(seed), **settings)
        return self.pipe.tokenizer.decode(np.asarray(tokens))

    def caption(self, image: Any, samples: int = 1, seed: int = 0) -> Answer:
        """Captions of one uint8 image `[H, W, C]`: the greedy one, then `samples - 1` sampled ones, each with
        log p(caption | image) in nats."""
        if not self.captions:
            raise ValueError(f"{self.workdir.name} was trained without image-to-text (config.model.text_head=False): "
                             "it cannot caption; train a text run both ways (configs/scenes_any.py).")
        if image is None:
            raise ValueError("no image given; upload an image to caption.")
        samples = int(samples)
        if not 1 <= samples <= self.max_batch:
            raise ValueError(f"captions={samples} must be in 1..{self.max_batch} (the server's --max_batch).")
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 4:
            image = image[..., :3]  # an RGBA upload: the colour channels
        if image.ndim == 2:
            image = image[..., None]
        batch = np.repeat(image[None].astype(np.uint8), self.max_batch, axis=0)
        texts, logp = self.pipe.caption(batch, seed=seed, return_logprob=True)
        rows = [(texts[0], float(logp[0]))]
        if samples > 1:
            texts, logp = self.pipe.caption(batch, seed=seed, greedy=False, return_logprob=True)
            rows += [(t, float(lp)) for t, lp in zip(texts[: samples - 1], logp)]
        return Answer(captions=rows, status=f"{len(rows)} caption(s): the first greedy, the others sampled.")
