"""The SentencePiece text tokenizer: training on captions, round trips, saved models, padding and length checks."""

import io

import numpy as np
import pytest
import sentencepiece as spm

from ar_jax.data.scenes import all_captions, generate
from ar_jax.tokenizers.text import TEXT_TOKENIZER_FILE, TextTokenizer


@pytest.fixture(scope="module")
def captions():
    return generate(3000, seed=0)[1]


@pytest.fixture(scope="module")
def tok(captions, tmp_path_factory):
    return TextTokenizer.train(captions, tmp_path_factory.mktemp("run"))


def test_round_trip_on_every_caption_with_whole_word_pieces(tok):
    texts = all_captions()
    ids = tok.encode(texts)
    assert tok.decode(ids) == texts
    assert all(len(row) == len(t.split()) for row, t in zip(ids, texts))  # a few dozen words: one piece each
    assert tok.pad_id == 0 and {tok.unk_id, tok.bos_id, tok.eos_id} == {1, 2, 3}
    assert max(max(r) for r in ids) < tok.vocab_size and min(min(r) for r in ids) > 3
    assert tok.decode([[tok.bos_id, *ids[0], tok.eos_id, *ids[1]], [0, 0, *ids[2]]]) == texts[:1] + texts[2:3]
    assert tok.encode(["A RED   Circle"]) == tok.encode(["a red circle"])  # normalised and lower-cased
    with pytest.raises(ValueError, match="outside this tokenizer's vocabulary"):
        tok.decode([[tok.vocab_size]])


def test_training_is_deterministic_and_the_saved_model_gives_the_same_ids(captions, tok, tmp_path):
    again = TextTokenizer.train(captions, tmp_path / "again")
    assert (tmp_path / "again" / TEXT_TOKENIZER_FILE).read_bytes() == open(tok.source, "rb").read()
    loaded = TextTokenizer.load(tmp_path / "again")
    texts = captions[:50]
    assert loaded.encode(texts) == tok.encode(texts) == again.encode(texts)
    assert loaded.fingerprint() == tok.fingerprint()
    other = TextTokenizer.train(captions[:50] + ["a completely different corpus"], tmp_path / "other.model")
    assert TextTokenizer.load(tmp_path / "other.model").fingerprint() == other.fingerprint() != tok.fingerprint()
    with pytest.raises(FileNotFoundError, match="TextTokenizer.train"):
        TextTokenizer.load(tmp_path / "nowhere")


def test_unseen_characters_map_to_unk(tok):
    (ids,) = tok.encode(["a red ∂ circle é zebra"])
    assert tok.unk_id in ids and all(0 <= i < tok.vocab_size for i in ids)
    assert "red" in tok.decode([ids])[0]


def test_tiny_corpus_trains_with_a_soft_vocabulary_limit(tmp_path):
    tiny = TextTokenizer.train(["a red circle", "two blue squares"], tmp_path, vocab_size=256)
    assert tiny.vocab_size < 256
    assert tiny.decode(tiny.encode(["two red squares"])) == ["two red squares"]
    with pytest.raises(ValueError, match="no captions"):
        TextTokenizer.train(["", "  "], tmp_path)


def test_check_length_names_the_prompt_and_both_lengths(tok):
    assert tok.check_length(["a red circle"], max_len=3) == tok.encode(["a red circle"])
    long = "a red circle left of a blue square"
    with pytest.raises(ValueError, match=rf"'{long}' is 8 tokens, more than max_len=5.*config.text.max_len"):
        tok.check_length(["a red circle", long], max_len=5)
    with pytest.raises(ValueError, match="non-empty list"):
        tok.check_length([], max_len=5)


def test_pad_left_puts_tokens_last_and_pad_right_first(tok):
    ids = [[5, 6, 7], [8], []]
    x, mask = tok.pad_left(ids, 4)
    assert x.dtype == np.int32 and mask.dtype == bool and x.shape == mask.shape == (3, 4)
    np.testing.assert_array_equal(x, [[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, x != 0)
    y, ymask = tok.pad_right(ids, 4)
    np.testing.assert_array_equal(y, [[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(ymask, y != 0)
    with pytest.raises(ValueError, match="row 0 has 3 tokens, more than length=2"):
        tok.pad_left(ids, 2)


def test_user_models_without_padding_at_zero_are_shifted(captions, tmp_path):
    """A LLaMA-style model (unk 0, bos 1, eos 2, no pad) and a T5-style one (pad 0, eos 1, unk 2, no bos)."""
    for specials, want in (({}, (1, 2, 3)), (dict(pad_id=0, eos_id=1, unk_id=2, bos_id=-1), (2, None, 1))):
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(captions), model_writer=buf, vocab_size=100,
                                       model_type="bpe", hard_vocab_limit=False, minloglevel=2, **specials)
        path = tmp_path / f"user{len(specials)}.model"
        path.write_bytes(buf.getvalue())
        tok = TextTokenizer.load(path)
        pieces = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
        assert tok.pad_id == 0 and (tok.unk_id, tok.eos_id) == (want[0], want[2])
        assert tok.bos_id == (want[1] if want[1] is not None else pieces)  # a missing bos gets the next id
        assert tok.vocab_size == pieces + (1 if not specials else 0) + (0 if want[1] else 1)
        ids = tok.encode(["a red circle left of a blue square"])
        assert 0 not in ids[0] and tok.decode([[tok.bos_id, *ids[0], tok.eos_id]]) == [
            "a red circle left of a blue square"]
