"""Every public entry point refuses bad input with a ValueError naming the value and the fix, before compiling."""

import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

import ar_jax
from ar_jax import sharding
from ar_jax.config import apply_overrides, load_config_file
from ar_jax.decode import sampling
from ar_jax.training import trainer
from tests.helpers import smoke_config

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("errors")
    trainer.train_and_evaluate(smoke_config(), workdir)
    return ar_jax.load(workdir)


IMG = np.zeros((2, 8, 8, 1), np.uint8)
CASES = [
    ("sample: label too large", lambda p: p.sample([10]), "label 10 is outside"),
    ("sample: negative label", lambda p: p.sample([-2]), "label -2"),
    ("sample: labels 2-D", lambda p: p.sample([[1, 2]]), "1-D"),
    ("sample: float labels", lambda p: p.sample(np.array([1.5])), "integers"),
    ("sample: empty labels", lambda p: p.sample([]), "non-empty"),
    ("sample: temperature 0", lambda p: p.sample([1], temperature=0.0), "greedy=True"),
    ("sample: top_p 0", lambda p: p.sample([1], top_p=0.0), "top_p=0.0"),
    ("sample: top_p > 1", lambda p: p.sample([1], top_p=2.0), "top_p=2.0"),
    ("sample: top_k > vocab", lambda p: p.sample([1], top_k=100), "top_k=100"),
    ("sample: top_k fractional", lambda p: p.sample([1], top_k=2.5), "top_k=2.5"),
    ("sample: cfg nan", lambda p: p.sample([1], cfg_scale=float("nan")), "cfg_scale=nan"),
    ("sample: unknown setting", lambda p: p.sample([1], temprature=0.5), "temprature"),
    ("complete: 0 known rows", lambda p: p.complete(IMG, 0, [1, 2]), "num_known_rows=0"),
    ("complete: all rows known", lambda p: p.complete(IMG, 8, [1, 2]), "num_known_rows=8"),
    ("complete: wrong image size", lambda p: p.complete(np.zeros((2, 9, 9, 1), np.uint8), 2, [1, 2]), "shape"),
    ("bpd: float images", lambda p: p.bits_per_dim(IMG.astype(np.float32), [1, 2]), "dtype float32"),
    ("bpd: wrong shape", lambda p: p.bits_per_dim(np.zeros((2, 8, 8, 3), np.uint8), [1, 2]), "8, 8, 1"),
    ("bpd: label count", lambda p: p.bits_per_dim(IMG, [1]), "one label per image"),
    ("generate: prefix too long", lambda p: sampling.generate(p.params, p.model_config, [1], jax.random.key(0),
                                                              prefix=np.zeros((1, 64), int)), "prefix of 64"),
    ("generate: prefix out of vocab", lambda p: sampling.generate(p.params, p.model_config, [1], jax.random.key(0),
                                                                  prefix=np.full((1, 3), 17)), "vocab_size=17"),
    ("load: weights", lambda p: ar_jax.load(ROOT, weights="best"), "not an ar_jax workdir|weights"),
    ("load: missing workdir", lambda p: ar_jax.load("/nonexistent/run"), "not an ar_jax workdir"),
    ("config: unknown key", lambda p: apply_overrides(p.config, ["--config.modle.dim=3"]), "not a key"),
    ("config: wrong type", lambda p: apply_overrides(p.config, ["--config.model.dim=big"]), "not a valid int"),
    ("config: bool", lambda p: apply_overrides(p.config, ["--config.sampling.greedy=maybe"]), "true or false"),
    ("config: not an override", lambda p: apply_overrides(p.config, ["batch_size=3"]), "--config.batch_size=32"),
    ("config: missing file", lambda p: load_config_file("configs/nope.py"), "does not exist"),
    ("train: batch 0", lambda p: trainer.check_config(smoke_config(batch_size=0)), "batch_size=0"),
    ("train: mesh", lambda p: sharding.mesh_shape(ml_collections.ConfigDict({"data": 3, "fsdp": 1, "tensor": 1}), 1),
     "uses 3 devices but 1"),
    ("train: model dims", lambda p: trainer.train_and_evaluate(smoke_config(**{"model.dim": 30}), "/tmp/x"),
     "dim=30 is not divisible"),
    ("train: data shape", lambda p: trainer.train_and_evaluate(smoke_config(**{"data.image_shape": (9, 9, 1)}),
                                                               "/tmp/x"), "fix config.data"),
]


@pytest.mark.parametrize("name, call, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_before_compiling(pipe, name, call, match):
    before = sampling._generate._cache_size()
    with pytest.raises(ValueError, match=match):
        call(pipe)
    assert sampling._generate._cache_size() == before, name


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("argv, match", [
    (["train.py", "--workdir", "w", "--config.batch_sise=3"], "batch_sise"),
    (["train.py", "--workdir", "w", "--config", "configs/none.py"], "does not exist"),
    (["sample.py", "--workdir", "/nonexistent", "--out", "x.png"], "not an ar_jax workdir"),
    (["sample.py", "--workdir", "w", "--out", "x.gif"], "must end in .png or .npz"),
    (["sample.py", "--workdir", "w", "--out", "x.png", "--cpu_cores", "0"], "--cpu_cores='0' must be auto, all or"),
])
def test_scripts_report_bad_arguments(argv, match, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert match in proc.stderr
