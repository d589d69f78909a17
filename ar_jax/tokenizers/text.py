"""Text <-> token ids with SentencePiece (the tokenizer library of T5, LLaMA and Gemma).

`TextTokenizer.train(captions, workdir)` fits a model on a run's training captions and saves it as
`workdir/text_tokenizer.model`; `TextTokenizer.load(workdir or file.model)` reads it back, or any user-given
SentencePiece `.model`. Training is deterministic (one thread, no sampling of sentences): the same captions give
the same model file, byte for byte. The default model is BPE with a soft vocabulary limit (`hard_vocab_limit=False`),
so a corpus of a few dozen distinct words gives whole-word pieces and stops short of `vocab_size`; text is NFKC
normalised and lower-cased, and characters never seen in training map to `unk_id`.

Ids: 0 is padding. Our models have `pad=0, unk=1, bos=2, eos=3`. A user model whose id 0 is not padding (LLaMA:
`unk=0, bos=1, eos=2`) is shifted by one so 0 stays free, and a missing `bos` / `eos` (T5 has no `bos`) gets an id
after the model's pieces: `vocab_size` counts them all.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

TEXT_TOKENIZER_FILE = "text_tokenizer.model"
PAD_ID = 0


def _spm():
    try:
        import sentencepiece
    except ImportError:
        raise ImportError("the text tokenizer needs sentencepiece: pip install 'sentencepiece>=0.2' "
                          "(or pip install -e . in the repository).") from None
    return sentencepiece


def _model_path(path: str | Path) -> Path:
    """A `.model` file as given, or `path/TEXT_TOKENIZER_FILE` for a folder (a run's workdir)."""
    path = Path(path).expanduser()
    return path if path.suffix == ".model" else path / TEXT_TOKENIZER_FILE


class TextTokenizer:
    """A SentencePiece model with padding at id 0; `encode`, `decode`, `pad_left`/`pad_right`, `check_length`."""

    def __init__(self, model_proto: bytes, source: str = "<bytes>"):
        self._proto = bytes(model_proto)
        self.source = source
        self._sp = _spm().SentencePieceProcessor(model_proto=self._proto)
        n = self._sp.get_piece_size()
        self._offset = 0 if self._sp.pad_id() == PAD_ID else 1  # keeps id 0 for padding
        extra = n + self._offset
        ids = {}
        for name, sp_id in (("bos", self._sp.bos_id()), ("eos", self._sp.eos_id())):
            if sp_id >= 0:
                ids[name] = sp_id + self._offset
            else:
                ids[name], extra = extra, extra + 1
        self.pad_id, self.unk_id = PAD_ID, self._sp.unk_id() + self._offset
        self.bos_id, self.eos_id = ids["bos"], ids["eos"]
        self.vocab_size = extra

    @classmethod
    def train(cls, captions: Iterable[str], path: str | Path, vocab_size: int = 256, model_type: str = "bpe",
              character_coverage: float = 1.0) -> TextTokenizer:
        """Fits a model on `captions` and saves it at `path` (a `.model` file, or a folder: `TEXT_TOKENIZER_FILE` in
        it). `vocab_size` is an upper bound (special ids included): a small corpus stops earlier."""
        captions = [c for c in captions if c.strip()]
        if not captions:
            raise ValueError("no captions to train the text tokenizer on (all empty); check the dataset's captions.")
        buf = io.BytesIO()
        try:
            _spm().SentencePieceTrainer.train(
                sentence_iterator=iter(captions), model_writer=buf, vocab_size=int(vocab_size),
                model_type=model_type, hard_vocab_limit=False, character_coverage=character_coverage,
                normalization_rule_name="nmt_nfkc_cf", pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
        except RuntimeError as e:
            raise ValueError(f"SentencePiece could not train with vocab_size={vocab_size}, model_type={model_type!r} "
                             f"on {len(captions)} captions ({e}); a vocab_size at least the number of distinct "
                             "characters plus 4 usually fixes it.") from None
        out = _model_path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(buf.getvalue())
        return cls(buf.getvalue(), str(out))

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """The model at `path`: a `.model` file, or a run's workdir holding `TEXT_TOKENIZER_FILE`."""
        file = _model_path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no text tokenizer at {file}; train one with TextTokenizer.train(captions, "
                                    f"{str(path)!r}) or pass the path of a SentencePiece .model file.")
        try:
            return cls(file.read_bytes(), str(file))
        except RuntimeError as e:
            raise ValueError(f"{file} is not a SentencePiece model ({e}).") from None

    @property
    def model_proto(self) -> bytes:
        """The serialized SentencePiece model (what a `.model` file holds)."""
        return self._proto

    def fingerprint(self) -> str:
        """sha256 (hex) of the serialized model: equal fingerprints, equal tokenizers."""
        return hashlib.sha256(self._proto).hexdigest()

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, no bos/eos (unseen characters become `unk_id`)."""
        if isinstance(prompts, str):
            raise TypeError(f"encode takes a list of prompts, got the string {prompts!r}; wrap it: [prompt].")
        return [[i + self._offset for i in ids] for ids in self._sp.encode(list(prompts))]

    def decode(self, ids: Sequence[Sequence[int]] | np.ndarray) -> list[str]:
        """Text of each id row `[B, T]`: stops at `eos_id`, skips padding and `bos_id`."""
        out = []
        for row in ids:
            kept = []
            for i in np.asarray(row).tolist():
                if not 0 <= i < self.vocab_size:
                    raise ValueError(f"token id {i} is outside this tokenizer's vocabulary [0, {self.vocab_size}); "
                                     "were the ids made with another tokenizer?")
                if i == self.eos_id:
                    break
                if i not in (self.pad_id, self.bos_id):
                    kept.append(i - self._offset)
            out.append(self._sp.decode(kept))
        return out

    def check_length(self, prompts: Sequence[str], max_len: int) -> list[list[int]]:
        """`encode(prompts)`, or a ValueError for an empty list or a prompt of more than `max_len` tokens."""
        if isinstance(prompts, str) or len(prompts) == 0:
            raise ValueError(f"prompts={prompts!r}: give a non-empty list of prompt strings.")
        ids = self.encode(prompts)
        for prompt, row in zip(prompts, ids):
            if len(row) > max_len:
                raise ValueError(f"prompt {prompt!r} is {len(row)} tokens, more than max_len={max_len}; shorten the "
                                 "prompt, or train with a larger config.text.max_len.")
        return ids

    def pad_left(self, ids: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids int32 `[B, length]` with each row's tokens at the end, padding first; mask bool `[B, length]`."""
        return self._pad(ids, length, left=True)

    def pad_right(self, ids: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids int32 `[B, length]` with each row's tokens first, padding after; mask bool `[B, length]`."""
        return self._pad(ids, length, left=False)

    def pad_caption(self, ids: Sequence[Sequence[int]], text_len: int) -> np.ndarray:
        """The text after an image (image-to-text): int32 `[B, text_len + 2]`, each row `[bos, ids.., eos]` then
        padding; a row of more than `text_len` ids is refused (`check_length` says which caption)."""
        wrapped = [[self.bos_id, *row, self.eos_id] for row in ids]
        return self._pad(wrapped, text_len + 2, left=False)[0]

    def _pad(self, ids: Sequence[Sequence[int]], length: int, left: bool) -> tuple[np.ndarray, np.ndarray]:
        out = np.full((len(ids), length), self.pad_id, np.int32)
        mask = np.zeros((len(ids), length), bool)
        for b, row in enumerate(ids):
            n = len(row)
            if n > length:
                raise ValueError(f"row {b} has {n} tokens, more than length={length}; check_length the prompts "
                                 "first, or pad to a larger length.")
            sl = slice(length - n, length) if left else slice(0, n)
            out[b, sl], mask[b, sl] = row, True
        return out, mask

    def __repr__(self) -> str:
        return f"TextTokenizer({self.source}, vocab_size={self.vocab_size}, fingerprint={self.fingerprint()[:12]})"
