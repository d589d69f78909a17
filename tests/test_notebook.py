"""The quickstart notebook runs top to bottom (the smoke model, a shortened training run)."""

import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).parent.parent


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("AR_JAX_ROOT", str(ROOT))
    monkeypatch.setenv("AR_JAX_QUICKSTART_STEPS", "20")
    monkeypatch.setenv("AR_JAX_QUICKSTART_CONFIG", "configs/digits_pixels.py:smoke")
    monkeypatch.setenv("AR_JAX_QUICKSTART_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("AR_JAX_QUICKSTART_T2I_VARIANT", ":smoke")
    monkeypatch.delenv("LLAMAGEN_GPT", raising=False)
    nb = nbformat.read(ROOT / "notebooks/quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    assert (tmp_path / "run/samples.png").exists() and (tmp_path / "run/completions.png").exists()
    assert (tmp_path / "run/prompts.png").exists() and (tmp_path / "scenes_t2i/text_tokenizer.model").exists()
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "test bits/dim" in printed and "bits/dim of the first row given its prompt" in printed
    assert json.loads((tmp_path / "run/config.json").read_text())["num_train_steps"] == 20
