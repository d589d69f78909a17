"""Image-to-text with the same transformer (`text_head`): captions through the cache, the per-position vocabulary,
caption log-probabilities, the both-ways loss, and bad input."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ar_jax.decode import captioning, sampling
from ar_jax.models.transformer import Transformer, init_cache
from ar_jax.training.steps import both_ways_loss_and_grads
from tests.helpers import make_text_model

BOS, EOS = 2, 3  # the text tokenizer's ids (pad 0, unk 1)


def make_any_model(**overrides):
    """A tiny random model trained both ways: 40 image codes, 8 text ids; greedy captions of `IMAGES` end after 3 or
    4 tokens or never (eos is made the runner-up of text id 6)."""
    cfg, params = make_text_model(text_head=True, text_vocab_size=8, vocab_size=40, **overrides)
    w = jax.random.normal(jax.random.key(0), params["text_output"].shape) * 2
    params["text_output"] = w.at[:, EOS].set(w[:, 6] + 0.01)
    return cfg, params


def images(cfg, n=8, key=2):
    return jax.random.randint(jax.random.key(key), (n, cfg.seq_len), 0, cfg.vocab_size)


def teacher_forced_greedy(cfg, params, tokens):
    """Greedy captions the slow way: the whole sequence through the model again for every text token, no cache."""
    B, N = tokens.shape[0], cfg.suffix_len
    null = jnp.zeros((B, cfg.text_len), jnp.int32)
    out, done = np.zeros((B, N), np.int32), np.zeros(B, bool)
    for i in range(N):
        text = jnp.concatenate([jnp.full((B, 1), BOS), jnp.asarray(out[:, :i])], axis=1)
        logits, _ = Transformer(cfg).apply({"params": params}, tokens, null, text=text, heads="text")
        tok = np.asarray(jnp.argmax(captioning.restrict(logits[:, -1], BOS), -1))
        out[:, i] = np.where(done, 0, tok)
        done |= out[:, i] == EOS
    return out


def test_greedy_captions_through_the_cache_equal_teacher_forcing_rows_ending_apart():
    cfg, params = make_any_model()
    toks = images(cfg)
    ids = np.asarray(captioning.caption(params, cfg, toks, jax.random.key(0), bos_id=BOS, eos_id=EOS))
    np.testing.assert_array_equal(ids, teacher_forced_greedy(cfg, params, toks))
    ends = [int(r.tolist().index(EOS)) if EOS in r else None for r in ids]
    assert {3, 4, None} <= set(ends)  # rows finish at different lengths, and one never does
    for row, end in zip(ids, ends):
        if end is not None:
            assert (row[end + 1:] == 0).all() and (row[:end] != 0).all()  # padded after eos, never before


def test_text_positions_sample_text_ids_and_image_positions_image_codes():
    """Text positions read the text head (ids < 8, never padding or bos), image positions the image head (codes up
    to 39): hot sampling over many seeds reaches every id each head allows and nothing else."""
    cfg, params = make_any_model()
    toks = images(cfg, n=16)
    seen = set()
    for seed in range(6):
        ids = np.asarray(captioning.caption(params, cfg, toks, jax.random.key(seed), bos_id=BOS, eos_id=EOS,
                                            greedy=False, temperature=4.0))
        for row in ids:
            body = row[: row.tolist().index(EOS)] if EOS in row else row
            seen |= set(body.tolist())
    assert seen == {1, 4, 5, 6, 7}  # every text id a caption may hold (unk too), no pad (0) or bos (2)
    codes = np.asarray(sampling.generate(params, cfg, np.zeros((16, cfg.text_len), np.int32), jax.random.key(0),
                                         temperature=4.0))
    assert codes.max() >= 8 and codes.max() < cfg.vocab_size  # image codes beyond the text vocabulary: image head


def test_caption_logprob_is_the_sum_of_teacher_forced_token_logprobs():
    """log p(caption, eos | image) against the text head's log-softmax read one token at a time through the cache."""
    cfg, params = make_any_model()
    toks = images(cfg, n=3)
    text = np.array([[BOS, 4, 5, EOS, 0, 0, 0, 0],  # two tokens, eos, padding
                     [BOS, 7, 1, 6, 4, 5, 6, EOS],  # the longest caption: text_len tokens
                     [BOS, EOS, 0, 0, 0, 0, 0, 0]], np.int32)  # the empty caption
    got = captioning.caption_logprob(params, cfg, toks, text)
    model = Transformer(cfg)
    null = jnp.zeros((3, cfg.text_len), jnp.int32)
    logits, cache = model.apply({"params": params}, toks, null, text=text[:, :1], cache=init_cache(cfg, 3),
                                heads="text")
    C, T = cfg.prefix_len, cfg.seq_len
    want = np.zeros(3)
    for i in range(1, text.shape[1]):
        logp = np.asarray(jax.nn.log_softmax(logits[:, -1]))
        want += np.where(text[:, i] != 0, logp[np.arange(3), text[:, i]], 0.0)
        if i < text.shape[1] - 1:
            logits, cache = model.apply({"params": params}, None, None, text=text[:, i:i + 1], start=C + T + i,
                                        cache=cache, heads="text")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.shape == (3,) and (got < 0).all()


def test_image_logits_ignore_the_text_after_them():
    """The image part of a sequence is what the text-to-image model sees: the text after it changes no image logit,
    and its NLL is `token_nll`'s."""
    cfg, params = make_any_model()
    toks = images(cfg, n=2)
    prompts = jnp.array([[0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 0, 4]], jnp.int32)
    a = np.array([[BOS, 4, 5, EOS, 0, 0, 0, 0], [BOS, 6, EOS, 0, 0, 0, 0, 0]], np.int32)
    b = np.array([[BOS, 7, 7, 7, 7, 7, 7, EOS], [BOS, EOS, 0, 0, 0, 0, 0, 0]], np.int32)
    img_a, txt_a = cfg.sequence_nll(params, toks, prompts, a)
    img_b, txt_b = cfg.sequence_nll(params, toks, prompts, b)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_allclose(img_a, cfg.token_nll(params, toks, prompts), atol=1e-5)
    assert txt_a.shape == (2, cfg.text_len + 1) and float(jnp.abs(txt_a - txt_b).max()) > 0.1


def test_both_ways_loss_weighs_each_modality_and_accumulates_exactly():
    cfg, params = make_any_model()
    B = 4
    toks = images(cfg, n=B, key=5)
    prompts = jnp.array([[0, 0, 0, 5, 6, 7]] * B, jnp.int32)
    text = jnp.array([[BOS, 4, 5, EOS, 0, 0, 0, 0], [BOS, 6, EOS, 0, 0, 0, 0, 0]] * 2, jnp.int32)
    loss, grads, parts = both_ways_loss_and_grads(params, cfg, toks, prompts, text, None, i2t_fraction=0.5,
                                                  loss_weights=(0.75, 0.25))
    null = jnp.zeros_like(prompts)
    cond = jnp.concatenate([null[:2], prompts[2:]])  # the first half: image-to-text rows, the null prompt
    img, txt = cfg.sequence_nll(params, toks, cond, text)
    counted = np.array([[1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [0] * 7, [0] * 7], bool)
    want_txt = float(np.asarray(txt)[counted].mean())
    np.testing.assert_allclose([parts["image_loss"], parts["text_loss"]], [float(img.mean()), want_txt], rtol=1e-5)
    np.testing.assert_allclose(loss, 0.75 * img.mean() + 0.25 * want_txt, rtol=1e-5)
    loss2, grads2, parts2 = both_ways_loss_and_grads(params, cfg, toks, prompts, text, None, i2t_fraction=0.5,
                                                     loss_weights=(0.75, 0.25), accum_steps=2)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads2, grads)
    assert float(optax.tree.norm(grads["text_output"])) > 0.01  # the caption rows reach the text head
    np.testing.assert_allclose(parts2["text_loss"], parts["text_loss"], rtol=1e-5)
    ctx, _, ctx_parts = both_ways_loss_and_grads(params, cfg, toks, prompts, text, None, i2t_fraction=0.5,
                                                 loss_weights=(0.75, 0.25), i2t_image_targets=False)
    want_img = float(img[2:].mean())  # the image-to-text rows' images are context only
    np.testing.assert_allclose([ctx, ctx_parts["image_loss"]], [0.75 * want_img + 0.25 * want_txt, want_img],
                               rtol=1e-5)


def test_bad_caption_arguments_are_refused_before_compiling():
    cfg, params = make_any_model()
    toks = images(cfg, n=2)
    before = captioning._caption._cache_size()
    cases = [
        (dict(tokens=toks, greedy=True, temperature=0.7), "do nothing with greedy=True"),
        (dict(tokens=toks, greedy=False, temperature=0.0), "temperature=0.0 must be > 0"),
        (dict(tokens=toks, greedy=False, top_k=9), r"top_k=9 must be an integer in \[0, vocab_size=8\]"),
        (dict(tokens=toks[:, :-1]), rf"\[B >= 1, seq_len={cfg.seq_len}\]"),
        (dict(tokens=np.zeros((0, cfg.seq_len), np.int32)), "at least one image"),
        (dict(tokens=toks + 40), r"\[0, vocab_size=40\)"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            captioning.caption(params, cfg, kw.pop("tokens"), jax.random.key(0), bos_id=BOS, eos_id=EOS, **kw)
    with pytest.raises(ValueError, match=r"\[B=2, text_len \+ 2=8\]"):
        captioning.caption_logprob(params, cfg, toks, np.zeros((2, 7), np.int32))
    t2i_cfg, t2i_params = make_text_model()
    for call in (lambda: captioning.caption(t2i_params, t2i_cfg, toks, jax.random.key(0), bos_id=BOS, eos_id=EOS),
                 lambda: captioning.caption_logprob(t2i_params, t2i_cfg, toks, np.zeros((2, 8), np.int32))):
        with pytest.raises(ValueError, match=r"config.model.text_head=False"):
            call()
    assert captioning._caption._cache_size() == before


def test_text_head_needs_a_causal_text_model():
    with pytest.raises(ValueError, match="text_head=True .* needs a causal text model"):
        make_text_model(text_head=True, condition="class")
    cfg, params = make_text_model()
    assert "text_output" not in params and cfg.max_len == cfg.prefix_len + cfg.seq_len
    with pytest.raises(ValueError, match="text_head=True"):
        Transformer(cfg).apply({"params": params}, None, None, text=jnp.zeros((1, 1), jnp.int32), start=3,
                               cache=init_cache(cfg, 1))


@pytest.mark.parametrize("native", [False, True])
def test_captions_through_the_cpu_decode_layouts(native):
    """The text head is a projection like the others: re-laid out for decoding (`[out, in]` copies, or the native
    kernel's panels), with the same greedy captions."""
    from ar_jax.backends.cpu import CpuBackend, kernels
    from ar_jax.models.transformer import PROJECTIONS

    if native and not kernels.available():
        pytest.skip("native kernels not built here")
    cfg, params = make_any_model()
    prepared = CpuBackend(native=native).prepare(params, PROJECTIONS)
    assert prepared.backend.layout == ("panels" if native else "out_in")
    assert prepared.params["text_output"].shape != params["text_output"].shape
    toks = images(cfg)
    ids = captioning.caption(prepared, cfg, toks, jax.random.key(0), bos_id=BOS, eos_id=EOS)
    np.testing.assert_array_equal(ids, teacher_forced_greedy(cfg, params, toks))


def test_image_positions_through_the_cache():
    """Learned absolute image positions, indexed by where each call's image tokens sit: guided sampling's logits
    are teacher forcing's combined, and greedy captions equal teacher forcing's."""
    from ar_jax.models import conditions

    cfg, params = make_any_model(image_positions="learned")
    params["image_positions"] = jax.random.normal(jax.random.key(7), params["image_positions"].shape)
    prompts = np.array([[0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 0, 4]], np.int32)
    toks, used = sampling.generate(params, cfg, prompts, jax.random.key(1), cfg_scale=2.5, greedy=True,
                                   return_logits=True)
    tf = lambda c: Transformer(cfg).apply({"params": params}, toks[:, :-1], c)[0][:, cfg.prefix_len - 1:]
    cond, null = tf(prompts), tf(conditions.null_like(cfg, jnp.asarray(prompts)))
    np.testing.assert_allclose(used, null + 2.5 * (cond - null), atol=1e-4)
    moved = {**params, "image_positions": params["image_positions"][::-1]}
    other = Transformer(cfg).apply({"params": moved}, toks[:, :-1], prompts)[0][:, cfg.prefix_len - 1:]
    assert float(jnp.abs(cond - other).max()) > 1e-3  # the rows matter
    pictures = images(cfg)
    ids = captioning.caption(params, cfg, pictures, jax.random.key(0), bos_id=BOS, eos_id=EOS)
    np.testing.assert_array_equal(ids, teacher_forced_greedy(cfg, params, pictures))


def test_sincos_image_positions_through_the_cache():
    """Fixed 2-D sine-cosine image positions: no parameter, row and column features apart, the same logits by the
    cache as by teacher forcing, and greedy captions equal teacher forcing's."""
    from ar_jax.models.transformer import sincos_positions

    cfg, params = make_any_model(image_positions="sincos")
    assert "image_positions" not in params
    pos = np.asarray(sincos_positions(cfg))
    grid, half = math.isqrt(cfg.seq_len), cfg.dim // 2
    assert pos.shape == (cfg.seq_len, cfg.dim)
    np.testing.assert_allclose(pos[1, :half], pos[0, :half])  # same row: same row features
    assert np.abs(pos[1, half:] - pos[0, half:]).max() > 1e-3  # next column: other column features
    np.testing.assert_allclose(pos[grid, half:], pos[0, half:])  # same column
    np.testing.assert_allclose(np.sqrt((pos ** 2).mean()), 0.02, rtol=1e-5)
    prompts = np.array([[0, 0, 0, 5, 6, 7], [0, 0, 0, 0, 0, 4]], np.int32)
    toks, used = sampling.generate(params, cfg, prompts, jax.random.key(1), greedy=True, return_logits=True)
    tf = Transformer(cfg).apply({"params": params}, toks[:, :-1], prompts)[0][:, cfg.prefix_len - 1:]
    np.testing.assert_allclose(used, tf, atol=1e-4)
    plain = Transformer(dataclasses.replace(cfg, image_positions="none")).apply(
        {"params": params}, toks[:, :-1], prompts)[0][:, cfg.prefix_len - 1:]
    assert float(jnp.abs(tf - plain).max()) > 1e-3  # the positions matter
    pictures = images(cfg)
    ids = captioning.caption(params, cfg, pictures, jax.random.key(0), bos_id=BOS, eos_id=EOS)
    np.testing.assert_array_equal(ids, teacher_forced_greedy(cfg, params, pictures))


def test_image_positions_refused_when_unknown():
    with pytest.raises(ValueError, match="image_positions='grid' is not one of"):
        make_any_model(image_positions="grid")


def test_full_image_context_sees_the_whole_image_and_keeps_the_cache_exact():
    """`image_context="full"` (a prefix-LM): a caption's log-probability changes with a later image token at an early
    position's expense only through the both-ways image attention; greedy captions through the cache equal teacher
    forcing with the same mask; text-to-image rows stay causal; the loss refuses image targets with it."""
    cfg, params = make_any_model(image_context="full")
    causal_cfg = dataclasses.replace(cfg, image_context="causal")
    pictures = images(cfg)
    ids = captioning.caption(params, cfg, pictures, jax.random.key(0), bos_id=BOS, eos_id=EOS)
    text = jnp.concatenate([jnp.full((len(ids), 1), BOS), jnp.asarray(ids)], axis=1)
    # teacher forcing with the prefix-LM mask gives the same greedy ids
    null = jnp.zeros((len(pictures), cfg.text_len), jnp.int32)
    full = jnp.full((len(pictures),), cfg.prefix_len + cfg.seq_len, jnp.int32)
    (img, txt), _ = Transformer(cfg).apply({"params": params}, pictures, null, text=text[:, :-1], heads="both",
                                           full_prefix=full)
    for b in range(len(ids)):
        for i in range(ids.shape[1]):
            if i and ids[b, i - 1] in (EOS, 0):
                break
            logits = txt[b, i].at[jnp.array([0, BOS])].set(-jnp.inf)
            assert int(jnp.argmax(logits)) == int(ids[b, i])
    # the image part: an early image position's logits see a later image token (both ways), causal ones do not
    changed = pictures.at[:, -1].set((pictures[:, -1] + 1) % cfg.vocab_size)
    first = lambda c, p, f: Transformer(c).apply({"params": params}, p, null, text=text[:, :-1], heads="both",
                                                 full_prefix=f)[0][0][:, cfg.prefix_len]
    assert float(jnp.abs(first(cfg, pictures, full) - first(cfg, changed, full)).max()) > 1e-4
    np.testing.assert_allclose(first(causal_cfg, pictures, None), first(causal_cfg, changed, None), atol=1e-6)
    np.testing.assert_allclose(first(cfg, pictures, None), first(cfg, changed, None), atol=1e-6)  # t2i rows
    # caption_logprob reads the same mask: it equals the teacher-forced sum above
    lp = captioning.caption_logprob(params, cfg, pictures, np.asarray(text))
    nll = -jax.nn.log_softmax(txt, -1)
    want = -jnp.sum(jnp.where(text[:, 1:] != 0, jnp.take_along_axis(nll, text[:, 1:, None], -1)[..., 0], 0), -1)
    np.testing.assert_allclose(lp, want, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="i2t_image_targets=False"):
        both_ways_loss_and_grads(params, cfg, pictures, jnp.zeros((len(pictures), cfg.text_len), jnp.int32),
                                 np.asarray(text), None, i2t_fraction=0.5,
                                 loss_weights=(1.0, 1.0), i2t_image_targets=True)
    with pytest.raises(ValueError, match="image_context='full'.*needs text_head=True"):
        make_text_model(image_context="full")
