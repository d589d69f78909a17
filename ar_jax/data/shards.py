"""Token shards: a dataset encoded once through a tokenizer, as ArrayRecord files Grain reads by index.

A shard directory holds `index.json` (the tokenizer's code count, grid and checkpoint step, the views, the splits
and their shard counts), and per split `{split}-{i:05d}-of-{n:05d}.array_record` with a `.done.json` beside each
finished shard (its record count). One record per image: msgpack `{"codes": uint16 [V, T], "label": int,
"caption": str}`, its V augmentation views (LlamaGen's: the image and its flip, or ten crops) in raster order; the
loader picks one view per example (`pick_view`). Written by `python -m ar_jax.data.tokenize`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

INDEX_FILE = "index.json"
FORMAT = 1
TOKENIZE = "python -m ar_jax.data.tokenize --config C --out DIR"


def shard_name(split: str, i: int, n: int) -> str:
    return f"{split}-{i:05d}-of-{n:05d}.array_record"


def done_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".done.json")


def encode_record(codes: np.ndarray, label: int, caption: str | None = None) -> bytes:
    """One image's record: codes `[V, T]` (V views of T tokens, each < 2**16), its label and caption."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.size and (codes.min() < 0 or codes.max() >= 2 ** 16):
        raise ValueError(f"codes of shape {codes.shape} (range {codes.min()}..{codes.max()}) do not fit a record: "
                         "[views, tokens] with values in 0..65535.")
    record = {"codes": codes.astype(np.uint16), "label": int(label)}
    if caption is not None:
        record["caption"] = str(caption)
    return serialization.msgpack_serialize(record)


def decode_record(data: bytes) -> dict[str, Any]:
    """`{"codes": uint16 [V, T], "label": int, "caption": str (if stored)}`."""
    return serialization.msgpack_restore(data)


def pick_view(record: bytes, rng: np.random.Generator) -> dict[str, Any]:
    """A decoded record with one of its views chosen by `rng`: `{"tokens": int32 [T], "label", "caption"?}`."""
    r = decode_record(record)
    codes = r.pop("codes")
    r["tokens"] = codes[rng.integers(len(codes))].astype(np.int32)
    return r


def read_index(directory: str | Path) -> dict[str, Any]:
    """The shard directory's `index.json`, or a ValueError naming the directory and the fix."""
    path = Path(directory) / INDEX_FILE
    if not Path(directory).is_dir() or not any(Path(directory).iterdir()):
        raise ValueError(f"config.loader.shards={str(directory)!r} is missing or empty; write it with {TOKENIZE} "
                         "(or set config.loader.shards='' to read the source into memory).")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e}); the directory is not a finished token-shard directory: "
                         f"rerun {TOKENIZE} into it.") from None
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} has format {index.get('format')!r}, this reader needs {FORMAT}: rerun {TOKENIZE}.")
    return index


def check_tokenizer(index: dict[str, Any], directory: str | Path, tokenizer: Any) -> None:
    """Refuse shards written by another tokenizer than the config's (code count, token count, grid, step)."""
    t = index["tokenizer"]
    have = {"code count": tokenizer.vocab_size, "tokens per image": tokenizer.seq_len,
            "grid": list(getattr(tokenizer, "grid", t.get("grid")) or []) or None,
            "tokenizer step": getattr(getattr(tokenizer, "pipe", None), "step", t.get("step"))}
    saved = {"code count": t["vocab_size"], "tokens per image": t["seq_len"], "grid": t.get("grid"),
             "tokenizer step": t.get("step")}
    for what, want in have.items():
        if saved[what] != want:
            raise ValueError(f"{Path(directory) / INDEX_FILE} was written by a tokenizer with {what} {saved[what]}, "
                             f"but the config's tokenizer has {want}: point config.loader.shards at shards of this "
                             f"tokenizer, or rewrite them: {TOKENIZE}.")


class ShardSource:
    """The records of one split of a shard directory, by global index (Grain's `ArrayRecordDataSource` over the
    shards in order). Checks on opening: every shard finished and holding the records its `.done.json` says."""

    def __init__(self, directory: str | Path, split: str = "train"):
        import grain

        self.directory = Path(directory)
        index = read_index(directory)
        if split not in index["splits"]:
            raise ValueError(f"{self.directory / INDEX_FILE} has splits {sorted(index['splits'])}, not {split!r}; "
                             f"rerun {TOKENIZE}.")
        n = int(index["splits"][split]["num_shards"])
        self.paths = [self.directory / shard_name(split, i, n) for i in range(n)]
        counts = [_finished_count(p) for p in self.paths]
        self._check_counts(counts)
        self.source = grain.sources.ArrayRecordDataSource([str(p) for p in self.paths])
        self.starts = np.cumsum([0, *counts])
        self.index, self.split = index, split

    def _check_counts(self, counts: list[int]) -> None:
        from array_record.python.array_record_module import ArrayRecordReader

        for path, want in zip(self.paths, counts):
            try:
                reader = ArrayRecordReader(str(path))
                have = f"{reader.num_records()} records"
                reader.close()
            except RuntimeError as e:  # e.g. "ArrayRecord file should be at least 64KB big"
                have = f"no readable records ({e})"
            if have != f"{want} records":
                raise ValueError(f"shard {path} is corrupt: it holds {have} but its {done_path(path).name} "
                                 f"says {want}. Delete both files and rerun {TOKENIZE} (finished shards are kept).")

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> bytes:
        try:
            return self.source[i]
        except RuntimeError as e:  # ArrayRecord's checksum of a damaged chunk
            path = self.paths[int(np.searchsorted(self.starts, i, side="right")) - 1]
            raise ValueError(f"shard {path} is corrupt: record {i} cannot be read ({str(e)[:200]}). Delete it and "
                             f"its {done_path(path).name} and rerun {TOKENIZE} (finished shards are kept).") from None

    def __repr__(self) -> str:
        return f"ShardSource({self.directory}, {self.split!r}, {len(self)} records)"


def _finished_count(path: Path) -> int:
    done = done_path(path)
    if not path.is_file() or not done.is_file():
        raise ValueError(f"shard {path} is not finished (no {done.name}); rerun {TOKENIZE} to complete the "
                         "directory (finished shards are skipped).")
    try:
        return int(json.loads(done.read_text())["records"])
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{done} cannot be read ({e}); delete it and its shard and rerun {TOKENIZE}.") from None
