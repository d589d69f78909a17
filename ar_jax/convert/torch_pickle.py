"""Read PyTorch `.pt` checkpoints as numpy arrays without torch and without running pickled code.

`torch.save` writes a zip: `<name>/data.pkl` (a pickle whose tensors point, by persistent id, at
raw storages `<name>/data/<key>`), plus `<name>/byteorder` and `<name>/version`. The unpickler here
resolves only the globals a state dict needs (tensor rebuild functions, storage types,
`collections.OrderedDict`) to functions of this module; any other global (`os.system`,
`builtins.eval`, a model class, ...) stops the load with a ValueError before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_TORCH_DTYPES = {"float32", "float", "float64", "double", "float16", "half", "bfloat16", "int64", "long",
                 "int32", "int", "int16", "int8", "uint8", "bool"}


class _StorageType:
    """Stands for `torch.FloatStorage` etc.: only the dtype is kept."""

    def __init__(self, name: str):
        self.name, self.dtype = name, np.dtype(_STORAGE_DTYPES[name])


class _Namespace:
    """Stands for `argparse.Namespace` (training scripts save their args): attributes only, no code."""

    def __repr__(self) -> str:
        return f"Namespace({vars(self)})"


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    """A (strided view of a) storage as a fresh contiguous array, bounds-checked."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not isinstance(storage, np.ndarray) or len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise pickle.UnpicklingError(f"malformed tensor record: size={size} stride={stride} offset={offset}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError(f"tensor of size {size}, stride {stride}, offset {offset} reads past the "
                                     f"end of its storage ({storage.size} elements)")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], size, tuple(s * item for s in stride))
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles spell `bytes` as `_codecs.encode(str, 'latin1')`; nothing else is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): _Namespace,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_SAFE_GLOBALS`, storage types and dtype names; storages come from the zip."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(io.BytesIO(data))
        self.zf, self.prefix, self.byteorder = zf, prefix, byteorder
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name in _TORCH_DTYPES:
            return f"torch.{name}"
        raise pickle.UnpicklingError(
            f"the pickle references {module}.{name}, which is not a tensor storage or a plain container")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.200}")
        _, stype, key, _location, numel = pid[:5]
        key = str(key)
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                raw = self.zf.read(name)
            except KeyError:
                raise pickle.UnpicklingError(f"storage {name} is missing from the archive") from None
            dtype = stype.dtype.newbyteorder(">") if self.byteorder == "big" else stype.dtype
            if len(raw) < int(numel) * dtype.itemsize:
                raise pickle.UnpicklingError(f"storage {name} holds {len(raw)} bytes, expected "
                                             f"{int(numel)} x {dtype.itemsize}")
            self.storages[key] = np.frombuffer(raw, dtype, count=int(numel)).astype(stype.dtype)
        return self.storages[key]


def _check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Only arrays, numbers, strings, None and containers of them may come out of the pickle."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _check_plain(v, where)
    elif isinstance(obj, _Namespace):
        _check_plain(vars(obj), where)
    elif not isinstance(obj, (np.ndarray, int, float, complex, str, bytes, bool, type(None))):
        raise ValueError(f"{where} is a {type(obj).__name__}, not a tensor or a plain container")


def load_torch_zip(path: str) -> Any:
    """The object a `torch.save` zip holds, tensors as numpy arrays; refuses anything but plain data.

    Raises ValueError (and executes nothing) if the pickle names any other global, and for the
    pre-1.6 (non-zip) torch format, which this reader does not parse.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a torch zip archive (torch.save since PyTorch 1.6) nor a .safetensors "
                         "file; it was not unpickled. Re-save it with a recent torch, or as .safetensors "
                         "(safetensors.torch.save_file(state_dict, 'model.safetensors')).")
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkls) != 1:
            raise ValueError(f"{path} is a zip but not a torch checkpoint: expected one '<name>/data.pkl', "
                             f"found {pkls or 'none'}.")
        prefix = pkls[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{prefix}byteorder" in zf.namelist():
            byteorder = zf.read(f"{prefix}byteorder").decode().strip()
        unpickler = _RestrictedUnpickler(zf.read(pkls[0]), zf, prefix, byteorder)
        try:
            obj = unpickler.load()
        except pickle.UnpicklingError as e:
            raise ValueError(f"refusing to load {path}: {e}. Nothing in it was executed; only tensors and "
                             "plain containers (dict, list, tuple, numbers, strings) are accepted. Save the "
                             "state dict alone (torch.save(model.state_dict(), ...)) or as .safetensors.") from None
        except Exception as e:  # a malformed stream: report, never fall back to plain pickle
            raise ValueError(f"could not read {path} as a torch checkpoint: {type(e).__name__}: {e}") from None
    _check_plain(obj, path)
    return obj
