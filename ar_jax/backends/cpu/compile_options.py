"""XLA:CPU compile options chosen per function: which kernel library runs a function's products and convolutions.

XLA:CPU (jaxlib 0.10) hands dots and convolutions to YNNPACK by default. YNNPACK is much faster for decoding's
few-row products, while Eigen's kernels run the VQ decoder's 3x3 convolutions about 1.5x faster
(`docs/performance.md`). So the decoding loop keeps XLA's default and convolution-heavy functions ("conv", see
`CpuBackend.compile_options`) compile with `EIGEN_CPU`. The options are set per compilation (`ar_jax.backends.jit`),
never in `XLA_FLAGS`, and only for the CPU backend: other backends compile with XLA's defaults.
"""

EIGEN_CPU = {"xla_cpu_experimental_ynn_fusion_type": ""}  # no YNNPACK fusions: Eigen runs dots and convolutions
