"""Native CPU kernels for decoding and for the VQ decoder's convolutions, built on first use with the C++ compiler.

XLA:CPU multiplies decoding's few rows (batch, doubled by CFG) by a weight far below the memory rate
(`benchmarks/few_row_products.py`): its kernels read the weight once per row or pack it. `rows_gemv.cc` reads
each weight once for 16 rows from a layout made for it, panels of 16 outputs (`to_panels`: `[ceil(O/16), I, 16]`,
one sequential stream a panel), in register tiles of 16 outputs x up to 8 rows with AVX-512, 6 with AVX2/FMA (what
`-march=native` finds), OpenMP over the panels, and is registered as an XLA FFI target.
`decode_attention.cc` is one position's attention over the written part of a float32 or bfloat16 cache: XLA's version
(`transformer.written_attention`) copies every cache block it reads before its small batched products.
`winograd.cc` holds the two transforms of `ar_jax/tokenizers/winograd.py`'s 3x3 convolutions (XLA made one strided
pass over the input for each of the 36 transformed planes).

All are built with `g++ -O3 -march=native -fopenmp` (a few seconds) into one library in `$XDG_CACHE_HOME/ar_jax`
(default `~/.cache/ar_jax`, or the temp folder if that is read-only), once per source, jaxlib, CPU and
`AR_JAX_KERNEL_FLAGS` (extra compiler flags, e.g. `-mno-avx512f` to build the AVX2 code on an AVX-512 CPU);
`AR_JAX_NATIVE_KERNELS=0` switches them off. Without a compiler, or if the build fails, decoding keeps XLA's own
products and attention and the VQ model `lax.conv` (one warning says why), so results never depend on them.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

SOURCES = [Path(__file__).with_name(name) for name in ("rows_gemv.cc", "decode_attention.cc", "winograd.cc")]
HEADER = Path(__file__).with_name("bfloat16.h")  # shared by rows_gemv.cc and decode_attention.cc
TARGET = "ar_jax_rows_gemv"
BF16_TARGET = "ar_jax_rows_gemv_bf16"  # the same product with bfloat16 weights
ATTENTION_TARGET = "ar_jax_decode_attention"
ATTENTION_BF16_TARGET = "ar_jax_decode_attention_bf16"  # over a bfloat16 cache
WINOGRAD_INPUT_TARGET, WINOGRAD_OUTPUT_TARGET = "ar_jax_winograd_input", "ar_jax_winograd_output"
PANEL = 16  # outputs a panel of `to_panels`
log = logging.getLogger(__name__)


def _cpu_key() -> str:
    """What -march=native depends on: the CPU model and its flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(ln for ln in lines if ln.startswith(("model name", "flags")))[:20000]
    except OSError:
        return platform.processor() + platform.machine()


def _extra_flags() -> list[str]:
    """`AR_JAX_KERNEL_FLAGS`, split: compiler flags after the defaults (tests build the AVX2 path with them)."""
    return os.environ.get("AR_JAX_KERNEL_FLAGS", "").split()


def library_path() -> Path:
    """Where the built kernels live: named by the hash of their sources, jaxlib's version, the CPU and the extra
    flags."""
    import jaxlib

    code = b"".join(src.read_bytes() for src in SOURCES + [HEADER])
    key = hashlib.sha256(code + jaxlib.__version__.encode() + _cpu_key().encode()
                         + " ".join(_extra_flags()).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ar_jax"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: the temp folder
        cache = Path(tempfile.gettempdir()) / "ar_jax"
    return cache / f"decode_kernels_{key}.so"


def _build(out: Path) -> None:
    """Compile `SOURCES` to `out` (atomically: a temporary file, then a rename, so parallel builds are safe)."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or $CXX) on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-w",
           f"-I{jax.ffi.include_dir()}", *_extra_flags(), *map(str, SOURCES), "-o", tmp]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        os.unlink(tmp)
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    os.replace(tmp, out)


@functools.cache
def _load() -> bool:
    """Build (if needed), load and register the kernel once per process; False, with one warning, on failure."""
    try:
        path = library_path()
        if not path.exists():
            _build(path)
        lib = ctypes.cdll.LoadLibrary(str(path))
        jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.ArJaxRowsGemv), platform="cpu")
        jax.ffi.register_ffi_target(BF16_TARGET, jax.ffi.pycapsule(lib.ArJaxRowsGemvBf16), platform="cpu")
        jax.ffi.register_ffi_target(ATTENTION_TARGET, jax.ffi.pycapsule(lib.ArJaxDecodeAttention), platform="cpu")
        jax.ffi.register_ffi_target(ATTENTION_BF16_TARGET, jax.ffi.pycapsule(lib.ArJaxDecodeAttentionBf16),
                                    platform="cpu")
        jax.ffi.register_ffi_target(WINOGRAD_INPUT_TARGET, jax.ffi.pycapsule(lib.ArJaxWinogradInput), platform="cpu")
        jax.ffi.register_ffi_target(WINOGRAD_OUTPUT_TARGET, jax.ffi.pycapsule(lib.ArJaxWinogradOutput),
                                    platform="cpu")
        return True
    except Exception as e:  # noqa: BLE001  (any failure means: use XLA's products)
        log.warning("ar_jax: native kernels unavailable (%s); decoding uses XLA's products, the VQ model lax.conv.", e)
        return False


def available() -> bool:
    """Whether the kernels are on: not switched off (`AR_JAX_NATIVE_KERNELS=0`), x86-64, built and registered."""
    if os.environ.get("AR_JAX_NATIVE_KERNELS", "1") == "0" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    return _load()


def _require() -> None:
    """Register the kernels before a call names them, or say why they cannot be used."""
    if not available():
        raise RuntimeError("ar_jax's native kernels are off (AR_JAX_NATIVE_KERNELS=0), not built here (no C++ "
                           "compiler, or not x86-64; see the warning logged): choose the backend with "
                           "`ar_jax.backends.for_arrays(...)`, which uses them only where they are on.")


def to_panels(w: jax.Array) -> jax.Array:
    """`w [O, I]` -> `[ceil(O/16), I, 16]`: panel p holds outputs 16p..16p+15 input by input (the last one padded
    with zeros), the layout `rows_gemv` reads as one stream."""
    outs, ins = w.shape
    panels = -(-outs // PANEL)
    w = jnp.pad(w, ((0, panels * PANEL - outs), (0, 0)))
    return w.reshape(panels, PANEL, ins).transpose(0, 2, 1)


def from_panels(w: jax.Array, out: int) -> jax.Array:
    """`to_panels`' inverse: `[ceil(O/16), I, 16]` -> `w [O, I]`, O = `out`."""
    return w.transpose(0, 2, 1).reshape(-1, w.shape[1])[:out]


def usable(w: jax.Array, x: jax.Array) -> bool:
    """Whether `rows_gemv(w, x, out)` applies to these arrays: float32 or bfloat16 panels `w [P, I, 16]`, `x [R, I]`
    (whether the kernels are on is the CPU backend's static choice, `CpuBackend.native`)."""
    floats = (jnp.float32, jnp.bfloat16)
    return x.ndim == 2 and w.ndim == 3 and w.shape[2] == PANEL and w.dtype in floats and x.dtype in floats


def rows_gemv(w: jax.Array, x: jax.Array, out: int) -> jax.Array:
    """`x [R, I] @ W.T` -> `[R, out]` float32, for `w = to_panels(W [out, I])`, by the native kernel (where
    `usable(w, x)`), summed in float32 (bfloat16 weights and rows are widened exactly)."""
    _require()
    if -(-out // PANEL) != w.shape[0]:
        raise ValueError(f"rows_gemv: {w.shape[0]} panels of {PANEL} cannot hold out={out} outputs.")
    shape = jax.ShapeDtypeStruct((x.shape[0], out), jnp.float32)
    target = BF16_TARGET if w.dtype == jnp.bfloat16 else TARGET
    return jax.ffi.ffi_call(target, shape, vmap_method="sequential")(w, x.astype(jnp.float32))  # vmap: one each


def attention_usable(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
    """Whether `decode_attention(q, k, v, ...)` applies: `q [B, KV, G, D]`, `k, v [B, KV, M, D]` (float32, or a
    bfloat16 cache)."""
    return (q.ndim == k.ndim == v.ndim == 4 and k.dtype == v.dtype and k.dtype in (jnp.float32, jnp.bfloat16)
            and q.dtype in (jnp.float32, jnp.bfloat16))


def decode_attention(q: jax.Array, k: jax.Array, v: jax.Array, length: jax.Array, scale: float) -> jax.Array:
    """Attention of `q [B, KV, G, D]` over the first `length` entries of `k, v [B, KV, M, D]` -> `[B, KV, G, D]`
    float32 (where `attention_usable`), computed in float32; `length` is clamped to `[1, M]`."""
    _require()
    out = jax.ShapeDtypeStruct(q.shape, jnp.float32)
    length = jnp.asarray(length, jnp.int32).reshape(())
    target = ATTENTION_BF16_TARGET if k.dtype == jnp.bfloat16 else ATTENTION_TARGET
    return jax.ffi.ffi_call(target, out, vmap_method="sequential")(q.astype(jnp.float32), k, v, length,
                                                                  scale=np.float32(scale))


def winograd_usable(x: jax.Array) -> bool:
    """Whether the Winograd transforms apply to `x [B, H, W, C]`: float32."""
    return x.ndim == 4 and x.dtype == jnp.float32


def winograd_input(x: jax.Array) -> jax.Array:
    """`x [B, H, W, C]` float32 -> `[36, B*ceil(H/4)*ceil(W/4), C]`: each 4x4 output tile's 6x6 input block
    (zero-padded by one, 'same'), transformed as `B^T d B` (see `ar_jax/tokenizers/winograd.py`)."""
    _require()
    B, H, W, C = x.shape
    out = jax.ShapeDtypeStruct((36, B * (-(-H // 4)) * (-(-W // 4)), C), jnp.float32)
    return jax.ffi.ffi_call(WINOGRAD_INPUT_TARGET, out, vmap_method="sequential")(x)


def winograd_output(m: jax.Array, bias: jax.Array, shape: tuple[int, int, int, int]) -> jax.Array:
    """`m [36, P, D]` float32 (the tiles' products), `bias [D]` -> `y [B, H, W, D]` = `shape`: each tile's
    `A^T m A` plus the bias, cropped to H x W."""
    _require()
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(WINOGRAD_OUTPUT_TARGET, out, vmap_method="sequential")(m, bias.astype(jnp.float32))
