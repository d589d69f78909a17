"""A run's token-shard inputs (`config.loader.shards`): the training records for Grain, the held-out and test
examples in memory for evaluation, each example's condition through the one condition interface."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from ar_jax.data import shards
from ar_jax.data.splits import validation_indices
from ar_jax.models import conditions


class Subset:
    """Records `indices` of a random-access source (the training records left after the validation split)."""

    def __init__(self, source: Any, indices: np.ndarray):
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.source[int(self.indices[i])]

    def __repr__(self) -> str:
        return f"{self.source!r}[{len(self)} of {len(self.source)}]"


class ShardInputs:
    """The shards of `config.loader.shards`, checked against the config's data and tokenizer before any training."""

    def __init__(self, config: ml_collections.ConfigDict, tokenizer: Any):
        directory = config.loader.shards
        if config.tokenizer.kind == "palette":
            raise ValueError("config.loader.shards with config.tokenizer.kind='palette' is not supported: a palette "
                             "run fits its palette on its in-memory images; set config.loader.shards=''.")
        self.train_all = shards.ShardSource(directory, "train")
        index = self.train_all.index
        shards.check_tokenizer(index, directory, tokenizer)
        saved = (tuple(index["image_shape"]), index["source"].get("num_classes"))
        want = (tuple(config.data.image_shape), config.data.num_classes)
        if saved != want:
            raise ValueError(f"{self.train_all.directory / shards.INDEX_FILE} holds images {saved[0]} with "
                             f"{saved[1]} classes, but config.data says {want[0]} with {want[1]}: point "
                             "config.loader.shards at shards of this dataset, or fix config.data.")
        keep, held = validation_indices(len(self.train_all), config.validation_fraction, config.seed)
        self.train, self.held = Subset(self.train_all, keep), held
        self.test = shards.ShardSource(directory, "test")

    def captions(self) -> list[str] | None:
        """The training captions (a text run fits its tokenizer on them): one pass over the records."""
        return [shards.decode_record(self.train[i]).get("caption") for i in range(len(self.train))] or None

    def example_fn(self, cfg: Any, text_tokenizer: Any, both_ways: bool) -> Callable[[bytes, np.random.Generator],
                                                                                   dict[str, Any]]:
        """`(record, rng) -> {"tokens": int32 [T], "cond": one row, "text"?: [L]}`: a view picked by `rng`."""
        text_run = cfg.condition == "text"

        def fn(record: bytes, rng: np.random.Generator) -> dict[str, Any]:
            r = shards.pick_view(record, rng)
            caption = [r.get("caption")] if text_run or both_ways else None
            cond = conditions.of_examples(cfg, np.asarray([r["label"]], np.int32), caption, text_tokenizer)
            out = {"tokens": r["tokens"], "cond": conditions.take(cond, 0)}
            if both_ways:
                out["text"] = text_tokenizer.pad_caption(text_tokenizer.check_length(caption, cfg.text_len),
                                                         cfg.text_len)[0]
            return out
        return fn

    def evaluation_sets(self, cfg: Any, text_tokenizer: Any, both_ways: bool) -> dict[str, Any]:
        """Test and validation examples in memory (view 0, the plain image): `{"test": (tokens, cond, text),
        "validation": (tokens, cond) or None}`."""
        out = {}
        for name, source in (("test", self.test), ("validation", Subset(self.train_all, self.held))):
            if name == "validation" and not len(self.held):
                out[name] = None
                continue
            tokens, labels, captions = read_records(source)
            cond = conditions.of_examples(cfg, labels, captions, text_tokenizer)
            text = (text_tokenizer.pad_caption(text_tokenizer.check_length(list(captions), cfg.text_len),
                                               cfg.text_len) if both_ways else None)
            out[name] = (tokens, cond, text) if name == "test" else (tokens, cond)
        return out


def read_records(source: Any) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """View 0 of every record: tokens int32 `[N, T]`, labels int32 `[N]`, captions (None when not stored)."""
    records = [shards.decode_record(source[i]) for i in range(len(source))]
    if not records:
        raise ValueError(f"{source!r} has no records; rerun {shards.TOKENIZE}.")
    tokens = np.stack([r["codes"][0] for r in records]).astype(np.int32)
    labels = np.asarray([r["label"] for r in records], np.int32)
    captions = [r["caption"] for r in records] if "caption" in records[0] else None
    return tokens, labels, captions
