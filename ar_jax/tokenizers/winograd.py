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

from ar_jax import kernels

Array = jax.Array

# y = A^T [(G g G^T) * (B^T d B)] A: correlation (as lax.conv) of a 6x6 input tile d with a 3x3 kernel g.
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], np.float64)
SAME = ((1, 1), (1, 1))


def direct(x: Array, kernel: Array, bias: Array) -> Array:
    """`lax.conv` with padding 1: `x [B, H, W, C_in]`, `kernel [3, 3, C_in, C_out]` (HWIO) -> `[B, H, W, C_out]`."""
    y = jax.lax.conv_general_dilated(x, kernel, (1, 1), SAME, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(y.dtype)


def transform_kernel(kernel: Array) -> Array:
    """`[3, 3, C_in, C_out]` -> `[36, C_in, C_out]`: G g G^T for every channel pair, tiles row-major."""
    gg = jnp.asarray(np.kron(G, G), jnp.float32)  # [36, 9]: (a, b) x (i, j), row-major
    k = jnp.dot(gg, kernel.astype(jnp.float32).reshape(9, -1), precision="highest")  # one product, not two
    return k.reshape(36, *kernel.shape[2:])


def applies(x: Array, kernel: Array) -> bool:
    """Whether `conv3x3` runs Winograd's way: float32 NHWC input and 3x3 kernel, native kernels on one CPU."""
    return kernel.shape[:2] == (3, 3) and kernel.dtype == jnp.float32 and kernels.winograd_usable(x)


@jax.custom_vjp
def _winograd(x: Array, kernel: Array, bias: Array) -> Array:
    u = kernels.winograd_input(x)  # [36, P, C_in]
    m = jnp.einsum("tpc,tcd->tpd", u, transform_kernel(kernel), preferred_element_type=jnp.float32)
    return kernels.winograd_output(m, bias, (*x.shape[:3], kernel.shape[-1]))


def _winograd_fwd(x: Array, kernel: Array, bias: Array) -> tuple[Array, tuple[Array, Array, Array]]:
    return _winograd(x, kernel, bias), (x, kernel, bias)


def _winograd_bwd(res: tuple[Array, Array, Array], g: Array) -> tuple[Array, Array, Array]:
    return jax.vjp(direct, *res)[1](g)


_winograd.defvjp(_winograd_fwd, _winograd_bwd)


def conv3x3(x: Array, kernel: Array, bias: Array | None = None) -> Array:
    """'Same'-padded 3x3 stride-1 correlation plus bias: `x [B, H, W, C_in]`, `kernel [3, 3, C_in, C_out]`,
    `bias [C_out]` -> `[B, H, W, C_out]`; Winograd's way where `applies`, else `lax.conv`."""
    bias = jnp.zeros(kernel.shape[-1], x.dtype) if bias is None else bias
    return _winograd(x, kernel, bias) if applies(x, kernel) else direct(x, kernel, bias)
