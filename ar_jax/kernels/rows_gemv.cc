// y[r, o] = sum_i w[o, i] * x[r, i] for a few rows r: one pass over w [O, I] serves every row.
#include <immintrin.h>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

template <int R>
static void rows(const float* w, const float* x, float* y, int64_t O, int64_t I, int64_t o0, int64_t o1) {
  for (int64_t o = o0; o < o1; ++o) {
    const float* wr = w + o * I;
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= I; i += 8) {
      __m256 wv = _mm256_loadu_ps(wr + i);
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * I + i), acc[r]);
    }
    for (int r = 0; r < R; ++r) {
      __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps(acc[r], 1));
      s = _mm_hadd_ps(s, s);
      s = _mm_hadd_ps(s, s);
      float t = _mm_cvtss_f32(s);
      for (int64_t j = i; j < I; ++j) t += wr[j] * x[r * I + j];
      y[r * O + o] = t;
    }
  }
}

template <int R>
static void run(const float* w, const float* x, float* y, int64_t O, int64_t I) {
  // Every core this process may use (as XLA's own pool does), whatever OMP_NUM_THREADS says.
#ifdef _OPENMP
#pragma omp parallel num_threads(omp_get_num_procs())
#endif
  {
#ifdef _OPENMP
    int n = omp_get_num_threads(), t = omp_get_thread_num();
#else
    int n = 1, t = 0;
#endif
    int64_t per = (O + n - 1) / n, o0 = t * per, o1 = o0 + per < O ? o0 + per : O;
    if (o0 < o1) rows<R>(w, x, y, O, I, o0, o1);
  }
}

static ffi::Error RowsGemvImpl(ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto wd = w.dimensions(), xd = x.dimensions();
  if (wd.size() != 2 || xd.size() != 2 || wd[1] != xd[1])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "rows_gemv: w [O, I] and x [R, I] expected");
  int64_t O = wd[0], I = wd[1], R = xd[0];
  const float *wp = w.typed_data(), *xp = x.typed_data();
  float* yp = y->typed_data();
  switch (R) {
    case 1: run<1>(wp, xp, yp, O, I); break;
    case 2: run<2>(wp, xp, yp, O, I); break;
    case 3: run<3>(wp, xp, yp, O, I); break;
    case 4: run<4>(wp, xp, yp, O, I); break;
    default: return ffi::Error(ffi::ErrorCode::kInvalidArgument, "rows_gemv: 1 to 4 rows");
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxRowsGemv, RowsGemvImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
