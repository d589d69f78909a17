"""'Same' 3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, 2016), on CPU.

Each 4x4 block of outputs comes from a 6x6 block of inputs: the inputs and the kernel are transformed (sums with
small constant weights), multiplied as 36 independent `[tiles, C_in] @ [C_in, C_out]` products, and transformed
back. The products do 36 multiply-adds per 16 outputs and input channel where a direct convolution does 144: a
quarter of the arithmetic that bounds a VQ decoder on a CPU. The two transforms are native kernels
(`ar_jax/kernels/winograd.cc`; XLA made one strided pass over the input per transformed plane), the products are
XLA's. float32 results differ from a direct convolution's by rounding (about 2e-5 of the output's largest value).
Gradients are the direct convolution's. Elsewhere (other backends, other dtypes, no native kernels): `lax.conv`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ar_jax.backends.cpu import kernels
from ar_jax.backends.xla import conv3x3_direct

Array = jax.Array

# y = A^T [(G g G^T) * (B^T d B)] A: correlation (as lax.conv) of a 6x6 input tile d with a 3x3 kernel g.
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float64)
CHUNK_BYTES = 640 << 20  # the most bytes of transformed tiles at once (whole images; see `images_per_chunk`)


direct = conv3x3_direct  # the reference (`ar_jax.backends.xla`): gradients and the fallback


def transform_kernel(kernel: Array) -> Array:
    """`[3, 3, C_in, C_out]` -> `[36, C_in, C_out]`: G g G^T for every channel pair, tiles row-major."""
    gg = jnp.asarray(np.kron(G, G), jnp.float32)  # [36, 9]: (a, b) x (i, j), row-major
    k = jnp.dot(gg, kernel.astype(jnp.float32).reshape(9, -1), precision="highest")  # one product, not two
    return k.reshape(36, *kernel.shape[2:])


def applies(x: Array, kernel: Array) -> bool:
    """Whether `conv3x3` can run Winograd's way: float32 NHWC input and 3x3 kernel (the backend decides whether the
    native transforms are there)."""
    return kernel.shape[:2] == (3, 3) and kernel.dtype == jnp.float32 and kernels.winograd_usable(x)


def images_per_chunk(shape: tuple[int, ...], features: int) -> int:
    """The most images of `shape [B, H, W, C_in]` whose transformed blocks fit `CHUNK_BYTES` (at least one), among
    the divisors of B. The transformed tiles are 2.25x the input (and the products' output as much again), so a
    large batch goes in `lax.map` chunks to bound memory; chunks cost time (the VQ-16 decode at batch 8 in chunks
    of 2 images: 1.16x its time whole, `benchmarks/winograd_decode.py`), so the bound is above that batch's 604 MB."""
    B, H, W, C = shape
    per_image = 36 * -(-H // 4) * -(-W // 4) * max(C, features) * 4
    most = max(1, CHUNK_BYTES // per_image)
    return max(d for d in range(1, B + 1) if B % d == 0 and d <= most)


def _winograd_chunk(x: Array, wk: Array, bias: Array) -> Array:
    u = kernels.winograd_input(x)  # [36, P, C_in]
    m = jnp.einsum("tpc,tcd->tpd", u, wk, preferred_element_type=jnp.float32)
    return kernels.winograd_output(m, bias, (*x.shape[:3], wk.shape[-1]))


@jax.custom_vjp
def _winograd(x: Array, kernel: Array, bias: Array) -> Array:
    wk, n = transform_kernel(kernel), images_per_chunk(x.shape, kernel.shape[-1])
    if n == x.shape[0]:
        return _winograd_chunk(x, wk, bias)
    y = jax.lax.map(lambda xs: _winograd_chunk(xs, wk, bias), x.reshape(-1, n, *x.shape[1:]))
    return y.reshape(*x.shape[:3], -1)


def _winograd_fwd(x: Array, kernel: Array, bias: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    return _winograd(x, kernel, bias), (x, kernel, bias)


def _winograd_bwd(res: tuple[Array, Array, Array], g: Array) -> tuple[Array, Array, Array]:
    return jax.vjp(direct, *res)[1](g)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def conv3x3(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    """'Same'-padded 3x3 stride-1 correlation plus bias: `x [B, H, W, C_in]`, `kernel [3, 3, C_in, C_out]`,
    `bias [C_out]` -> `[B, H, W, C_out]`; Winograd's way where `applies` (needs the native kernels), else `lax.conv`."""
    bias = jnp.zeros(kernel.shape[-1], x.dtype) if bias is None else bias
    return _winograd(x, kernel, bias) if applies(x, kernel) else direct(x, kernel, bias)
