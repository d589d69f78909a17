"""Config files (`configs/*.py` with `get_config()`), `--config.a.b=v` overrides, and the saved copy."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import ml_collections

CONFIG_FILE = "config.json"


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """`path/to/x.py` or `path/to/x.py:arg` -> `get_config()` / `get_config(arg)`, locked. The file's folder is
    importable while it runs (`import common` gives `configs/common.py`, the shared blocks)."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise ValueError(f"config file {path!r} does not exist; pass e.g. --config configs/digits_pixels.py.")
    mod_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(mod_spec)
    folder = str(Path(path).resolve().parent)
    sys.path.insert(0, folder)
    try:
        mod_spec.loader.exec_module(module)
        config = module.get_config(arg) if arg else module.get_config()
    finally:
        sys.path.remove(folder)
    config.lock()
    return config


def _parse_value(raw: str, current: Any, key: str) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--config.{key}={raw!r}: expected true or false.")
    if isinstance(current, str) or current is None:
        try:
            return ast.literal_eval(raw) if current is None else raw
        except (ValueError, SyntaxError):
            return raw
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise ValueError(f"--config.{key}={raw!r} is not a valid {type(current).__name__}.") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if type(value) is not type(current):
        raise ValueError(f"--config.{key}={raw!r} is a {type(value).__name__}, but {key} is a "
                         f"{type(current).__name__} (now {current!r}).")
    return value


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        keys.append(prefix + k)
        if isinstance(v, ml_collections.ConfigDict):
            keys += _all_keys(v, prefix + k + ".")
    return keys


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> ml_collections.ConfigDict:
    """Apply `--config.a.b=value` strings; unknown keys and wrong types raise ValueError."""
    config = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise ValueError(f"unrecognised argument {item!r}; overrides look like --config.batch_size=32.")
        key, raw = item[len("--config."):].split("=", 1)
        node, *path = key.split(".")[::-1]
        parent = config
        for part in reversed(path):
            parent = parent.get(part) if isinstance(parent, ml_collections.ConfigDict) else None
        if not isinstance(parent, ml_collections.ConfigDict) or node not in parent:
            close = difflib.get_close_matches(key, _all_keys(config), n=3)
            hint = f" Did you mean {', '.join('--config.' + c for c in close)}?" if close else ""
            raise ValueError(f"--config.{key} is not a key of this config.{hint}")
        parent[node] = _parse_value(raw, parent[node], key)
    config.lock()
    return config


def save_config(config: ml_collections.ConfigDict, workdir: str | Path) -> None:
    """Write the complete config as JSON next to the checkpoints (atomically)."""
    path = Path(workdir) / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
    tmp.replace(path)


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """The config saved in a workdir, or ValueError if there is none."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: {workdir!r} is not an ar_jax workdir (train one with "
                         "`python train.py --workdir ...`).")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    config.lock()
    return config


def diff_keys(a: ml_collections.ConfigDict, b: ml_collections.ConfigDict, sections: tuple[str, ...]) -> list[str]:
    """Keys under `sections` whose values differ between two configs (lists and tuples compare equal)."""
    fa = _flatten(json.loads(json.dumps(a.to_dict())))
    fb = _flatten(json.loads(json.dumps(b.to_dict())))
    keys = sorted(k for k in set(fa) | set(fb) if k.split(".")[0] in sections and fa.get(k) != fb.get(k))
    return [f"{k}: {fa.get(k, '<absent>')!r} -> {fb.get(k, '<absent>')!r}" for k in keys]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out
