// y[r, o] = sum_i w[o, i] * x[r, i] for decoding's few rows (batch, or 2 x batch with CFG), any number of them.
// w comes in panels of 16 outputs, [ceil(O/16), I, 16] (`kernels.to_panels`), float32 or bfloat16 (widened to
// float32 as it is read: half the bytes from memory); x and y are float32. A panel is one sequential stream (64
// bytes an input in float32), multiplied in register tiles of 16 outputs x a few rows, one weight load and one
// broadcast row value a row an input, no horizontal sums: with AVX-512 (built with -march=native on a CPU that has
// it) 16 outputs are one vector and a tile has up to 8 rows; with AVX2, two vectors of 8 lanes and up to 6 rows
// (12 accumulators). Rows go in chunks of 16, each chunk transposed once ([I, 16]) so the broadcasts read one
// contiguous line; a panel serves every row tile of a chunk from L1/L2, and meanwhile the next panel is prefetched
// in even portions, so memory is read all the time the arithmetic runs. OpenMP splits the panels between the cores.
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "bfloat16.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

constexpr int64_t PANEL = 16;  // outputs a panel (one 16-lane vector, or two of 8 lanes)
constexpr int64_t CHUNK = 16;  // rows transposed and run together

#if defined(__AVX512F__)
// A panel's 16 outputs are one 512-bit vector: register tiles of 16 outputs x up to 8 rows, one weight load and 8
// broadcast FMAs an input (half the instructions of two 256-bit vectors; Zen 4/5 and Intel's AVX-512 cores).
constexpr int64_t NR = 8;  // most rows a register tile
static inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
static inline __m512 load16(const uint16_t* p) {  // 16 bfloat16 -> float32, each into the top of its lane
  __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
#define ACC(r) __m512 c##r = _mm512_setzero_ps();
#define LOAD_W(p) __m512 wv = load16(p);
#define STEP(r) \
  if constexpr (R > r) c##r = _mm512_fmadd_ps(wv, _mm512_set1_ps(xi[r]), c##r);
#define STORE(r) \
  if constexpr (R > r) _mm512_mask_storeu_ps(y + r * O, mask, c##r);
#define STORE_MASK const __mmask16 mask = valid == PANEL ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
#else
// AVX2: two 8-lane vectors a panel, register tiles of 16 outputs x up to 6 rows (12 accumulators).
constexpr int64_t NR = 6;  // most rows a register tile
static inline void load16(const float* p, __m256& a, __m256& b) {
  a = _mm256_loadu_ps(p);
  b = _mm256_loadu_ps(p + 8);
}
static inline void load16(const uint16_t* p, __m256& a, __m256& b) {  // 16 bfloat16 -> two float32 vectors
  a = load8(p);
  b = load8(p + 8);
}

static inline void store16(float* y, __m256 a, __m256 b, int64_t valid) {
  if (valid == PANEL) {
    _mm256_storeu_ps(y, a);
    _mm256_storeu_ps(y + 8, b);
  } else {  // the last panel of an O that is not a multiple of 16
    alignas(32) float tmp[PANEL];
    _mm256_store_ps(tmp, a);
    _mm256_store_ps(tmp + 8, b);
    std::memcpy(y, tmp, sizeof(float) * valid);
  }
}

// Named accumulators, not an array: GCC kept an array of vectors on the stack, storing it every step.
#define ACC(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
#define LOAD_W(p) \
  __m256 w0, w1;  \
  load16(p, w0, w1);
#define STEP(r)                                                   \
  if constexpr (R > r) {                                          \
    __m256 xb = _mm256_broadcast_ss(xi + r);                      \
    c##r##0 = _mm256_fmadd_ps(w0, xb, c##r##0);                   \
    c##r##1 = _mm256_fmadd_ps(w1, xb, c##r##1);                   \
  }
#define STORE(r) \
  if constexpr (R > r) store16(y + r * O, c##r##0, c##r##1, valid);
#define STORE_MASK
#endif

// R rows (xt: [I, CHUNK] transposed rows, from the tile's first) by one panel wp [I, 16] -> y [R, O] from the
// panel's first output; prefetches `lines` cache lines from `ahead`, evenly over the I steps.
template <typename W, int R>
static void tile(const W* wp, const float* xt, float* y, int64_t O, int64_t I, int64_t valid, const char* ahead,
                 int64_t lines) {
  static_assert(R <= NR, "a tile has at most NR rows");
  ACC(0) ACC(1) ACC(2) ACC(3) ACC(4) ACC(5) ACC(6) ACC(7)
  const float* xi = xt;
  int64_t due = 0;
  for (int64_t i = 0; i < I; ++i, xi += CHUNK) {
    due += lines;
    if (due >= I) {
      _mm_prefetch(ahead, _MM_HINT_T0);
      ahead += 64;
      due -= I;
    }
    LOAD_W(wp + PANEL * i)
    STEP(0) STEP(1) STEP(2) STEP(3) STEP(4) STEP(5) STEP(6) STEP(7)
  }
  STORE_MASK
  STORE(0) STORE(1) STORE(2) STORE(3) STORE(4) STORE(5) STORE(6) STORE(7)
}

template <typename W>
static void rows(const W* wp, const float* xt, float* y, int64_t O, int64_t I, int64_t n, int64_t valid,
                 const char* ahead, int64_t lines) {
  switch (n) {
    case 1: tile<W, 1>(wp, xt, y, O, I, valid, ahead, lines); break;
    case 2: tile<W, 2>(wp, xt, y, O, I, valid, ahead, lines); break;
    case 3: tile<W, 3>(wp, xt, y, O, I, valid, ahead, lines); break;
    case 4: tile<W, 4>(wp, xt, y, O, I, valid, ahead, lines); break;
    case 5: tile<W, 5>(wp, xt, y, O, I, valid, ahead, lines); break;
#if defined(__AVX512F__)
    case 6: tile<W, 6>(wp, xt, y, O, I, valid, ahead, lines); break;
    case 7: tile<W, 7>(wp, xt, y, O, I, valid, ahead, lines); break;
#endif
    default: tile<W, NR>(wp, xt, y, O, I, valid, ahead, lines); break;
  }
}

template <typename W>
static void run(const W* w, const float* x, float* y, int64_t O, int64_t I, int64_t R) {
  if (R == 0 || O == 0) return;
  if (I == 0) {  // empty sums
    std::fill(y, y + R * O, 0.0f);
    return;
  }
  const int64_t panels = (O + PANEL - 1) / PANEL, panel_bytes = I * PANEL * int64_t(sizeof(W));
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
    int64_t per = (panels + n - 1) / n, p0 = std::min(panels, t * per), p1 = std::min(panels, p0 + per);
    std::vector<float> xt(I * CHUNK);
    for (int64_t c0 = 0; c0 < R && p0 < p1; c0 += CHUNK) {
      int64_t rc = std::min(CHUNK, R - c0), tiles = (rc + NR - 1) / NR;
      for (int64_t i = 0; i < I; ++i)
        for (int64_t r = 0; r < rc; ++r) xt[i * CHUNK + r] = x[(c0 + r) * I + i];
      for (int64_t p = p0; p < p1; ++p) {
        const W* wp = w + p * I * PANEL;
        int64_t valid = std::min(PANEL, O - p * PANEL);
        // The next panel this thread reads (this chunk's next, or the next chunk's first), spread over the tiles.
        int64_t q = p + 1 < p1 ? p + 1 : p0;
        const char* ahead = reinterpret_cast<const char*>(w + q * I * PANEL);
        int64_t left = (p + 1 < p1 || c0 + CHUNK < R) ? (panel_bytes + 63) / 64 : 0, r0 = 0;
        for (int64_t k = 0; k < tiles; ++k) {
          int64_t m = (rc - r0) / (tiles - k), lines = left / (tiles - k);
          rows(wp, xt.data() + r0, y + (c0 + r0) * O + p * PANEL, O, I, m, valid, ahead, lines);
          ahead += 64 * lines;
          left -= lines;
          r0 += m;
        }
      }
    }
  }
}

template <typename W, ffi::DataType T>
static ffi::Error Impl(ffi::Buffer<T> w, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto wd = w.dimensions(), xd = x.dimensions(), yd = y->dimensions();
  if (wd.size() != 3 || xd.size() != 2 || yd.size() != 2 || wd[2] != PANEL || wd[1] != xd[1] || yd[0] != xd[0] ||
      (yd[1] + PANEL - 1) / PANEL != wd[0])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "rows_gemv: w [ceil(O/16), I, 16], x [R, I] and y [R, O] expected");
  run(reinterpret_cast<const W*>(w.untyped_data()), x.typed_data(), y->typed_data(), yd[1], wd[1], xd[0]);
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxRowsGemv, (Impl<float, ffi::F32>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxRowsGemvBf16, (Impl<uint16_t, ffi::BF16>),
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::BF16>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
