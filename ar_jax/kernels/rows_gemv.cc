// y[r, o] = sum_i w[o, i] * x[r, i] for a few rows r (decoding: batch, or 2 x batch with CFG); w [O, I] float32
// or bfloat16 (widened to float32 as it is read: half the bytes from memory), x and y float32.
// One pass over w from memory serves every row. Register tiles of 2 outputs x up to 6 rows (12 accumulators of 8
// lanes; the row vector pinned to a register, so each weight vector is loaded once a tile); the rows are split into
// near-equal tiles. Outputs go in blocks (about 128 KB of weights) that stay in L2 while every row tile passes over
// them; while one block's tiles run, the next block is prefetched into the cache in even portions, one a tile, so
// memory is read all the time the arithmetic runs, not only during the first row tile (the first block: the next
// output pair's rows, prefetched during its first tile).
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "bfloat16.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

constexpr int64_t NO = 2;      // outputs a tile
constexpr int64_t NR = 6;      // most rows a tile
constexpr int64_t BLOCK_BYTES = 128 << 10;  // weight bytes a block: two blocks and a row tile fit in L2
constexpr int64_t MAX_BLOCK = 64;           // most outputs a block

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_hadd_ps(s, s);
  s = _mm_hadd_ps(s, s);
  return _mm_cvtss_f32(s);
}

template <typename W, int B, int R>
static void tile(const W* w, const float* x, float* y, int64_t O, int64_t I, int64_t o, int64_t r0, bool pf,
                 const char* ahead, int64_t lines) {
  __m256 acc[B][R];
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) acc[b][r] = _mm256_setzero_ps();
  const W* wo = w + o * I;
  const float* xr = x + r0 * I;
  int64_t i = 0;
  for (int64_t k = 0; i + 8 <= I; i += 8, ++k) {
    if (k < lines) _mm_prefetch(ahead + 64 * k, _MM_HINT_T1);
    __m256 wv[B];
    for (int b = 0; b < B; ++b) wv[b] = load8(wo + b * I + i);
    if (pf)
      for (int b = 0; b < B; ++b) _mm_prefetch(reinterpret_cast<const char*>(wo + (B + b) * I + i), _MM_HINT_T0);
    for (int r = 0; r < R; ++r) {
      __m256 xv = _mm256_loadu_ps(xr + r * I + i);
      asm volatile("" : "+x"(xv));  // keep the row vector in a register (not reloaded for every output)
      for (int b = 0; b < B; ++b) acc[b][r] = _mm256_fmadd_ps(wv[b], xv, acc[b][r]);
    }
  }
  for (int b = 0; b < B; ++b)
    for (int r = 0; r < R; ++r) {
      float t = hsum(acc[b][r]);
      for (int64_t j = i; j < I; ++j) t += widen(wo[b * I + j]) * xr[r * I + j];
      y[(r0 + r) * O + o + b] = t;
    }
}

template <typename W, int B>
static void rows(const W* w, const float* x, float* y, int64_t O, int64_t I, int64_t o, int64_t r0, int64_t n,
                 bool pf, const char* ahead, int64_t lines) {
  switch (n) {
    case 1: tile<W, B, 1>(w, x, y, O, I, o, r0, pf, ahead, lines); break;
    case 2: tile<W, B, 2>(w, x, y, O, I, o, r0, pf, ahead, lines); break;
    case 3: tile<W, B, 3>(w, x, y, O, I, o, r0, pf, ahead, lines); break;
    case 4: tile<W, B, 4>(w, x, y, O, I, o, r0, pf, ahead, lines); break;
    case 5: tile<W, B, 5>(w, x, y, O, I, o, r0, pf, ahead, lines); break;
    default: tile<W, B, 6>(w, x, y, O, I, o, r0, pf, ahead, lines); break;
  }
}

template <typename W>
static void span(const W* w, const float* x, float* y, int64_t O, int64_t I, int64_t R, int64_t o0, int64_t o1) {
  int64_t tiles = (R + NR - 1) / NR;
  int64_t block = std::clamp<int64_t>(BLOCK_BYTES / (I * int64_t(sizeof(W))) / NO * NO, NO, MAX_BLOCK);
  for (int64_t ob = o0; ob < o1; ob += block) {
    int64_t oe = std::min(o1, ob + block), r0 = 0;
    const char* ahead = reinterpret_cast<const char*>(w + oe * I);  // the next block, read during this one
    int64_t left = ((std::min(o1, oe + block) - oe) * I * int64_t(sizeof(W)) + 63) / 64;
    int64_t calls = tiles * ((oe - ob + NO - 1) / NO), per = (left + calls - 1) / calls;
    for (int64_t t = 0; t < tiles; ++t) {
      int64_t n = (R - r0) / (tiles - t);
      for (int64_t o = ob; o < oe; o += NO) {
        int64_t lines = std::min({per, left, I / 8});
        if (o + NO <= oe)
          rows<W, NO>(w, x, y, O, I, o, r0, n, ob == o0 && t == 0 && o + 2 * NO <= oe, ahead, lines);
        else
          rows<W, 1>(w, x, y, O, I, o, r0, n, false, ahead, lines);
        ahead += 64 * lines;
        left -= lines;
      }
      r0 += n;
    }
  }
}

template <typename W>
static void run(const W* w, const float* x, float* y, int64_t O, int64_t I, int64_t R) {
  if (R == 0 || O == 0) return;
  if (I == 0) {  // empty sums (and no block size to derive from I)
    std::fill(y, y + R * O, 0.0f);
    return;
  }
  // Every core this process may use (as XLA's own pool does), whatever OMP_NUM_THREADS says.
#ifdef _OPENMP
#pragma omp parallel num_threads(omp_get_num_procs())
#endif
  {
#ifdef _OPENMP
    int64_t n = omp_get_num_threads(), t = omp_get_thread_num();
#else
    int64_t n = 1, t = 0;
#endif
    int64_t pairs = (O + NO - 1) / NO, per = (pairs + n - 1) / n;
    int64_t o0 = std::min(O, t * per * NO), o1 = std::min(O, o0 + per * NO);
    if (o0 < o1) span(w, x, y, O, I, R, o0, o1);
  }
}

template <typename W, ffi::DataType T>
static ffi::Error Impl(ffi::Buffer<T> w, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto wd = w.dimensions(), xd = x.dimensions();
  if (wd.size() != 2 || xd.size() != 2 || wd[1] != xd[1])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "rows_gemv: w [O, I] and x [R, I] expected");
  run(reinterpret_cast<const W*>(w.untyped_data()), x.typed_data(), y->typed_data(), wd[0], wd[1], xd[0]);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxRowsGemv, (Impl<float, ffi::F32>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxRowsGemvBf16, (Impl<uint16_t, ffi::BF16>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::BF16>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
