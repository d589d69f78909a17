"""Scaling options of the one decoder: `scan_layers` equals the loop over layers (restacked weights: same logits,
gradients and samples), `remat` leaves gradients unchanged, the stacked params carry a `layers` axis, activation
constraints are absent without a mesh. On a mesh (8 forced devices) they are checked by tests/export_run.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from ar_jax import sharding
from ar_jax.decode import sampling
from ar_jax.models import transformer as tr
from tests.helpers import make_test_model


@pytest.fixture(scope="module")
def pair():
    """An unscanned model `(cfg, params)` and the same weights stacked for `scan_layers=True`."""
    cfg, params = make_test_model(num_layers=3, num_kv_heads=2)
    return cfg, params, cfg.replace(scan_layers=True), tr.stack_layers(params, cfg.num_layers)


def batch(cfg):
    return jax.random.randint(jax.random.key(2), (2, cfg.seq_len), 0, cfg.vocab_size), jnp.array([0, 2])


def grads(cfg, params):
    tokens, labels = batch(cfg)
    return jax.jit(jax.grad(lambda p: cfg.token_nll(p, tokens, labels).mean()))(params)


def max_diff(a, b):
    return max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_scanned_params_are_stacked_with_a_layers_axis(pair):
    cfg, params, scfg, stacked = pair
    sp, logical = tr.init_params(scfg, jax.random.key(0))
    assert jax.tree.structure(sp) == jax.tree.structure(stacked)
    assert sp["layers"]["attention"]["wq"].shape == (3, 32, 4, 8)
    assert logical["layers"]["attention"]["wq"] == PartitionSpec("layers", "embed", "heads", "head_dim")
    assert logical["layers"]["feed_forward"]["w2"] == PartitionSpec("layers", "mlp", "embed")
    assert logical["tok_embeddings"] == tr.param_logical_axes(cfg)["tok_embeddings"]  # outside the stack: as before
    mesh = type("M", (), {"shape": {"data": 1, "fsdp": 2, "tensor": 2}})()  # spec_for reads only the axis sizes
    assert sharding.spec_for((3, 32, 4, 8), logical["layers"]["attention"]["wq"], mesh) == \
        PartitionSpec(None, "fsdp", "tensor", None)  # the layers axis is never split
    np.testing.assert_array_equal(tr.unstack_layers(stacked)["layers_2"]["feed_forward"]["w1"],
                                  params["layers_2"]["feed_forward"]["w1"])
    assert jax.tree.structure(tr.unstack_layers(stacked)) == jax.tree.structure(params)


def test_scanned_model_gives_the_loops_logits_and_gradients(pair):
    cfg, params, scfg, stacked = pair
    tokens, labels = batch(cfg)
    want, _ = tr.Transformer(cfg).apply({"params": params}, tokens[:, :-1], labels)
    got, _ = tr.Transformer(scfg).apply({"params": stacked}, tokens[:, :-1], labels)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert float(jnp.abs(want).max()) > 0.1
    g_loop, g_scan = grads(cfg, params), grads(scfg, stacked)
    assert max_diff(tr.unstack_layers(g_scan), g_loop) < 1e-5
    assert float(jnp.abs(g_loop["layers_0"]["attention"]["wq"]).max()) > 1e-4  # gradients that could be wrong


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_gives_the_same_gradients(pair, remat):
    cfg, params, scfg, stacked = pair
    g_loop, g_scan = grads(cfg, params), grads(scfg, stacked)
    assert max_diff(grads(cfg.replace(remat=remat), params), g_loop) == 0.0  # the same arithmetic, recomputed
    assert max_diff(grads(scfg.replace(remat=remat), stacked), g_scan) < 1e-6


def test_remat_with_dropout_trains(pair):
    """A rematerialised block recomputes its dropout masks from the same rng: the loss with dropout is the same."""
    cfg, params, scfg, stacked = pair
    tokens, labels = batch(cfg)
    for c, p in ((cfg, params), (scfg, stacked)):
        c = c.replace(resid_dropout=0.3, ffn_dropout=0.3)
        loss = lambda p, c=c: c.token_nll(p, tokens, labels, rng=jax.random.key(5)).mean()
        want = jax.value_and_grad(loss)(p)
        got = jax.value_and_grad(lambda p, c=c: c.replace(remat="full").token_nll(
            p, tokens, labels, rng=jax.random.key(5)).mean())(p)
        assert abs(float(got[0]) - float(want[0])) < 1e-6
        assert float(want[0]) != float(c.token_nll(p, tokens, labels).mean())  # dropout is on
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got[1], want[1])


def test_scanned_model_samples_like_the_loop(pair):
    """Samplers unstack a scanned model's layers (`prepare`): one cache array per layer, the same tokens."""
    cfg, params, scfg, stacked = pair
    labels = jnp.array([0, 1])
    kw = dict(temperature=1.0, top_k=0, cfg_scale=2.0)
    want = sampling.generate(params, cfg, labels, jax.random.key(3), **kw)
    got = sampling.generate(stacked, scfg, labels, jax.random.key(3), **kw)
    np.testing.assert_array_equal(got, want)


def test_a_cache_with_stacked_params_is_refused(pair):
    _, _, scfg, stacked = pair
    tokens, labels = batch(scfg)
    with pytest.raises(ValueError, match=r"scan_layers=True.*transformer.prepare\(params\)"):
        tr.Transformer(scfg).apply({"params": stacked}, tokens[:, :1], labels, cache=tr.init_cache(scfg, 2))


def test_unknown_remat_is_refused():
    with pytest.raises(ValueError, match=r"remat='some'.*\('none', 'full', 'dots'\).*config.model.remat"):
        make_test_model(remat="some")


def test_no_mesh_no_constraint(pair):
    """Without a mesh in context (one device, decoding) the model's program holds no sharding constraint; with one of
    several devices it does (`sharding.constrain`), which a 1-device process can only see as an abstract mesh."""
    cfg, params, scfg, stacked = pair
    tokens, labels = batch(cfg)
    for c, p in ((cfg, params), (scfg.replace(remat="dots"), stacked)):
        text = str(jax.make_jaxpr(jax.grad(lambda p, c=c: c.token_nll(p, tokens, labels).mean()))(p))
        assert "sharding_constraint" not in text
    mesh = jax.sharding.AbstractMesh((2, 1, 2), sharding.MESH_AXES)
    with jax.sharding.use_abstract_mesh(mesh):
        text = str(jax.make_jaxpr(lambda p: cfg.token_nll(p, tokens, labels))(params))
    assert text.count("sharding_constraint") >= 2 + 5 * cfg.num_layers  # embeddings, logits; per block q k v o h x x


def test_fsdp_takes_a_parameters_largest_dimension_it_divides_when_embed_does_not():
    """GPT-3B's embed (3200) on 256 FSDP devices: the MLP and embedding weights split along another dimension; the
    activations (no `parameter`) and the stacked layers axis never take the fallback."""
    mesh = type("M", (), {"shape": {"data": 1, "fsdp": 256, "tensor": 1}})()
    assert sharding.spec_for((3200, 8704), ("embed", "mlp"), mesh, parameter=True) == PartitionSpec(None, "fsdp")
    assert sharding.spec_for((3200, 8704), ("embed", "mlp"), mesh) == PartitionSpec(None, None)
    assert sharding.spec_for((24, 3200, 8704), ("layers", "embed", "mlp"), mesh, parameter=True) == \
        PartitionSpec(None, None, "fsdp")
    assert sharding.spec_for((512, 3200), ("layers", "embed"), mesh, parameter=True) == PartitionSpec(None, None)
    assert sharding.spec_for((3200, 32, 100), ("embed", "heads", "head_dim"), mesh, parameter=True) == \
        PartitionSpec(None, None, None)  # nothing divides: whole (use fsdp x tensor for GPT-3B on 256 devices)
    assert sharding.spec_for((1536, 4096), ("embed", "mlp"), mesh, parameter=True) == PartitionSpec("fsdp", None)


def test_smoke_run_with_scanned_rematerialised_layers_trains_loads_and_samples(tmp_path):
    """`config.model.scan_layers` / `config.model.remat` end to end: the run saves stacked params, `ar_jax.load`
    reads them, evaluates them scanned and samples from them unstacked."""
    import ar_jax
    from ar_jax.training import trainer
    from tests.helpers import smoke_config

    config = smoke_config(num_train_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
                          **{"model.scan_layers": True, "model.remat": "dots"})
    state = trainer.train_and_evaluate(config, tmp_path)
    assert state.params["layers"]["attention"]["wq"].shape[0] == config.model.num_layers
    pipe = ar_jax.load(tmp_path)
    assert pipe.model_config.scan_layers and pipe.model_config.remat == "dots"
    images = np.stack([np.asarray(pipe.sample([1, 2], seed=0)) for _ in range(2)])
    assert images.shape[1:] == (2, 8, 8, 1) and (images[0] == images[1]).all()
    assert np.isfinite(pipe.bits_per_dim(images[0], [1, 2])).all()
