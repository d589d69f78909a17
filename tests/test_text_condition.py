"""Text-to-image through the one condition interface: padded prompts, the cache, guidance, dropout, bad input."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ar_jax.decode import beam, processors, sampling, speculative
from ar_jax.models import conditions
from ar_jax.models.transformer import Transformer
from ar_jax.training.steps import drop_condition
from tests.helpers import cached_logits, make_test_model, make_text_model

PROMPTS = np.array([[0, 0, 0, 5, 9, 3],  # three tokens, left-padded
                    [4, 7, 1, 2, 8, 6],  # all six
                    [0, 0, 0, 0, 0, 11]], np.int32)  # one


def test_teacher_forcing_equals_the_cache_with_padded_prompts():
    cfg, params = make_text_model(num_kv_heads=2)
    tokens = jax.random.randint(jax.random.key(2), (3, cfg.seq_len), 0, cfg.vocab_size)
    tf, _ = jax.jit(lambda t: Transformer(cfg).apply({"params": params}, t, PROMPTS))(tokens[:, :-1])
    tf = tf[:, cfg.prefix_len - 1:]
    kv = cached_logits(cfg, params, tokens, PROMPTS)
    np.testing.assert_allclose(kv, tf, atol=1e-5)
    assert cfg.prefix_len == 7 and float(jnp.abs(tf).max()) > 0.1


def test_padding_is_masked_out_of_attention():
    """The padding id's embedding reaches no real row: changing it changes no logit of a real position."""
    cfg, params = make_text_model()
    tokens = jax.random.randint(jax.random.key(3), (3, cfg.seq_len - 1), 0, cfg.vocab_size)
    run = lambda p: Transformer(cfg).apply({"params": p}, tokens, PROMPTS)[0]
    moved = jax.tree.map(lambda x: x, params)
    moved["text_embeddings"] = params["text_embeddings"].at[0].set(5.0)
    a, b = run(params), run(moved)
    real = np.concatenate([PROMPTS != 0, np.ones((3, 1 + tokens.shape[1]), bool)], axis=1)
    np.testing.assert_array_equal(np.asarray(a)[real], np.asarray(b)[real])
    assert np.isfinite(np.asarray(a)).all()  # padding rows attend to themselves only: finite
    assert float(jnp.abs(a[:, -1] - run({**params, "text_embeddings": params["text_embeddings"] * 2})[:, -1]).max()) \
        > 1e-4  # while the real prompt tokens do matter


def test_causality_across_the_text_image_boundary():
    cfg, params = make_text_model()
    tokens = jax.random.randint(jax.random.key(4), (1, cfg.seq_len - 1), 0, cfg.vocab_size)
    prompt = PROMPTS[1:2]
    run = lambda t, p: Transformer(cfg).apply({"params": params}, t, p)[0]
    base = run(tokens, prompt)
    C = cfg.prefix_len
    changed = run(tokens.at[0, 4].set((tokens[0, 4] + 1) % cfg.vocab_size), prompt)  # image token 4: row C + 4
    np.testing.assert_array_equal(base[:, :C + 4], changed[:, :C + 4])  # every text row and earlier image rows
    assert float(jnp.abs(base[:, C + 4:] - changed[:, C + 4:]).max()) > 1e-4
    word = prompt.copy()
    word[0, 5] = 13  # the last prompt token (row 5)
    later_word = run(tokens, word)
    np.testing.assert_array_equal(base[:, :5], later_word[:, :5])  # rows before it do not see it
    assert float(jnp.abs(base[:, C:] - later_word[:, C:]).max()) > 1e-4  # every image row does


def test_changing_the_prompt_leaves_the_unconditional_rows_unchanged():
    cfg, params = make_text_model()
    tokens = jax.random.randint(jax.random.key(5), (3, cfg.seq_len - 1), 0, cfg.vocab_size)
    run = lambda p: Transformer(cfg).apply({"params": params}, jnp.concatenate([tokens, tokens]),
                                           conditions.concat(p, conditions.null_like(cfg, p)))[0]
    a, b = run(jnp.asarray(PROMPTS)), run(jnp.asarray(PROMPTS[::-1].copy()))
    np.testing.assert_array_equal(a[3:], b[3:])
    assert float(jnp.abs(a[:3] - b[:3]).max()) > 1e-4


@pytest.mark.parametrize("greedy", [True, False])
def test_cfg_scale_one_equals_conditional_sampling(greedy):
    """A constant schedule of 1 runs the [cond; null] batch and guides with scale 1: the conditional samples."""
    cfg, params = make_text_model()
    kw = dict(greedy=greedy, temperature=0.9, return_logits=True)
    toks, logits = sampling.generate(params, cfg, PROMPTS, jax.random.key(7), cfg_scale=1.0, **kw)
    toks_g, logits_g = sampling.generate(params, cfg, PROMPTS, jax.random.key(7), cfg_scale=processors.Constant(1.0),
                                         **kw)
    np.testing.assert_array_equal(toks, toks_g)
    np.testing.assert_allclose(logits, logits_g, atol=1e-5)
    guided = sampling.generate(params, cfg, PROMPTS, jax.random.key(7), cfg_scale=3.0, greedy=True)
    assert guided.shape == (3, cfg.seq_len)


def test_guided_sampling_logits_are_teacher_forcings_combined():
    cfg, params = make_text_model()
    toks, used = sampling.generate(params, cfg, PROMPTS, jax.random.key(1), cfg_scale=2.5, greedy=True,
                                   return_logits=True)
    tf = lambda c: Transformer(cfg).apply({"params": params}, toks[:, :-1], c)[0][:, cfg.prefix_len - 1:]
    cond, null = tf(PROMPTS), tf(conditions.null_like(cfg, jnp.asarray(PROMPTS)))
    np.testing.assert_allclose(used, null + 2.5 * (cond - null), atol=1e-4)


def test_beam_and_speculative_take_prompts_the_same_way():
    cfg, params = make_text_model()
    greedy = sampling.generate(params, cfg, PROMPTS, jax.random.key(0), greedy=True, cfg_scale=2.0)
    width1, _ = beam.beam_search(params, cfg, PROMPTS, width=1, cfg_scale=2.0)
    np.testing.assert_array_equal(width1[:, 0], greedy)
    spec, _ = speculative.generate(params, cfg, params, cfg, PROMPTS, jax.random.key(1), k=3, greedy=True,
                                   cfg_scale=2.0)
    np.testing.assert_array_equal(spec, greedy)


def test_caption_dropout_at_its_rate():
    cfg, _ = make_text_model()
    cond = jnp.tile(jnp.asarray(PROMPTS[1:2]), (20000, 1))
    out = np.asarray(drop_condition(cfg, cond, jax.random.key(0), 0.1))
    dropped = (out == 0).all(1)
    assert abs(dropped.mean() - 0.1) < 0.01
    np.testing.assert_array_equal(out[~dropped], np.asarray(cond)[~dropped])  # the others untouched
    labels_cfg, _ = make_test_model()
    labels = np.asarray(drop_condition(labels_cfg, jnp.zeros(20000, jnp.int32), jax.random.key(0), 0.1))
    assert abs((labels == labels_cfg.null_label).mean() - 0.1) < 0.01


class FakeTokenizer:
    """Whitespace words -> ids 1.. (what `conditions.make` needs of a text tokenizer)."""

    def check_length(self, prompts, max_len):
        ids = [[1 + len(w) for w in p.split()] for p in prompts]
        for p, row in zip(prompts, ids):
            if len(row) > max_len:
                raise ValueError(f"prompt {p!r} is {len(row)} tokens, more than max_len={max_len}")
        return ids

    def pad_left(self, ids, length):
        out = np.zeros((len(ids), length), np.int32)
        for b, row in enumerate(ids):
            out[b, length - len(row):] = row
        return out, out != 0


def test_prompts_become_left_padded_ids():
    cfg, _ = make_text_model()
    ids = conditions.make(cfg, prompts=["a red circle", "ab"], text_tokenizer=FakeTokenizer())
    np.testing.assert_array_equal(ids, [[0, 0, 0, 2, 4, 7], [0, 0, 0, 0, 0, 3]])


@pytest.mark.parametrize("kwargs,match", [
    ({"prompts": ["a b c d e f g"]}, "7 tokens, more than max_len=6"),
    ({"prompts": []}, "non-empty list of prompts"),
    ({"prompts": "a red circle"}, "non-empty list of prompts"),
    ({"labels": [1, 2]}, "labels were given to a text-conditioned run"),
    ({}, "non-empty list of prompts"),
])
def test_bad_text_input_is_refused_before_compiling(kwargs, match):
    cfg, _ = make_text_model()
    before = sampling._generate._cache_size()
    with pytest.raises(ValueError, match=match):
        conditions.make(cfg, text_tokenizer=FakeTokenizer(), **kwargs)
    assert sampling._generate._cache_size() == before


def test_prompts_given_to_a_class_run_are_refused():
    cfg, params = make_test_model()
    with pytest.raises(ValueError, match="prompts were given to a class-conditional run"):
        conditions.make(cfg, prompts=["a red circle"])
    with pytest.raises(ValueError, match="class-conditional model"):
        sampling.generate(params, cfg, {"features": np.zeros((1, 1, 2))}, jax.random.key(0))


def test_prompt_ids_out_of_range_are_refused():
    cfg, params = make_text_model()
    with pytest.raises(ValueError, match="text_vocab_size=20"):
        sampling.generate(params, cfg, np.full((1, 6), 20), jax.random.key(0))
    with pytest.raises(ValueError, match=r"\[B, text_len=6\]"):
        sampling.generate(params, cfg, np.zeros((1, 5), np.int32), jax.random.key(0))


def test_the_run_trains_its_text_tokenizer_once_and_keeps_it(tmp_path):
    """A new text run trains SentencePiece on its captions and saves it; a resumed run reads that file (whatever
    the captions), and a `config.text.tokenizer` that is not the run's is refused."""
    from ar_jax import builders
    from ar_jax.config import load_config_file
    from ar_jax.tokenizers.text import TEXT_TOKENIZER_FILE, TextTokenizer

    config = load_config_file("configs/scenes_t2i.py:smoke")
    first = builders.fit_text_tokenizer(config, tmp_path, ["a red circle", "two blue squares"])
    assert (tmp_path / TEXT_TOKENIZER_FILE).is_file()
    again = builders.fit_text_tokenizer(config, tmp_path, ["a purple triangle above a white square"])
    assert again.fingerprint() == first.fingerprint()
    assert again.encode(["a red circle"]) == first.encode(["a red circle"])
    TextTokenizer.train(["three yellow triangles", "a green square"], tmp_path / "other")
    config.unlock()
    config.text.tokenizer = str(tmp_path / "other" / TEXT_TOKENIZER_FILE)
    with pytest.raises(ValueError, match="is not the tokenizer this run was trained with"):
        builders.fit_text_tokenizer(config, tmp_path, ["a red circle"])
    cfg = builders.make_model_config(load_config_file("configs/scenes_t2i.py:smoke"),
                                     types.SimpleNamespace(vocab_size=16, seq_len=64), text_tokenizer=first)
    assert cfg.condition == "text" and cfg.text_vocab_size == first.vocab_size and cfg.prefix_len == 11
