// One decoding position's attention over the written part of a float32 or bfloat16 cache (q and out float32), for
// every (batch row, KV head):
// out[b, h, g, :] = softmax_m(scale * q[b, h, g, :] . k[b, h, m, :]) @ v[b, h, m, :] over m < length.
// Reads each written key and value row once (for all G query heads of a KV head) and nothing past `length`,
// with no copy of the cache; OpenMP over the (batch row, KV head) pairs.
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "bfloat16.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

template <typename C>
static inline void prefetch_row(const C* p, int64_t D) {
  for (int64_t d = 0; d < D; d += 64 / sizeof(C)) _mm_prefetch(reinterpret_cast<const char*>(p + d), _MM_HINT_T0);
}

template <typename C>
static void pair(const float* q, const C* k, const C* v, float* out, int64_t G, int64_t D, int64_t n,
                 float scale, float* s, const C* k_next, const C* v_next) {
  for (int64_t m = 0; m < n; ++m) {
    const C* km = k + m * D;
    if (k_next) prefetch_row(k_next + m * D, D);
    for (int64_t g = 0; g < G; ++g) {
      const float* qg = q + g * D;
      float t = 0.f;
#pragma omp simd reduction(+ : t)
      for (int64_t d = 0; d < D; ++d) t += qg[d] * widen(km[d]);
      s[g * n + m] = t * scale;
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    float* sg = s + g * n;
    float hi = *std::max_element(sg, sg + n), total = 0.f;
    for (int64_t m = 0; m < n; ++m) total += (sg[m] = std::exp(sg[m] - hi));
    float* og = out + g * D;
    std::fill(og, og + D, 0.f);
    for (int64_t m = 0; m < n; ++m) {
      const C* vm = v + m * D;
      if (v_next && g == G - 1) prefetch_row(v_next + m * D, D);
      const float p = sg[m];
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) og[d] += p * widen(vm[d]);
    }
    const float inv = 1.f / total;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) og[d] *= inv;
  }
}

template <typename C, ffi::DataType T>
static ffi::Error Impl(ffi::Buffer<ffi::F32> q, ffi::Buffer<T> k, ffi::Buffer<T> v, ffi::Buffer<ffi::S32> length,
                       ffi::ResultBuffer<ffi::F32> out, float scale) {
  auto qd = q.dimensions(), kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || qd[0] != kd[0] || qd[1] != kd[1] || qd[3] != kd[3])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "decode_attention: q [B, KV, G, D], k, v [B, KV, M, D]");
  const int64_t P = qd[0] * qd[1], G = qd[2], D = qd[3], M = kd[2];
  const int64_t n = std::clamp<int64_t>(length.typed_data()[0], 1, M);
  const float* qp = q.typed_data();
  const C *kp = reinterpret_cast<const C*>(k.untyped_data()), *vp = reinterpret_cast<const C*>(v.untyped_data());
  float* op = out->typed_data();
#ifdef _OPENMP
#pragma omp parallel num_threads(omp_get_num_procs())
#endif
  {
    std::vector<float> s(G * n);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t i = 0; i < P; ++i) {
      const bool more = i + 1 < P;  // the next pair this thread takes (static schedule: usually i + 1)
      pair(qp + i * G * D, kp + i * M * D, vp + i * M * D, op + i * G * D, G, D, n, scale, s.data(),
           more ? kp + (i + 1) * M * D : nullptr, more ? vp + (i + 1) * M * D : nullptr);
    }
  }
  return ffi::Error::Success();
}

#define BIND(T)                       \
  ffi::Ffi::Bind()                    \
      .Arg<ffi::Buffer<ffi::F32>>()   \
      .Arg<ffi::Buffer<T>>()          \
      .Arg<ffi::Buffer<T>>()          \
      .Arg<ffi::Buffer<ffi::S32>>()   \
      .Ret<ffi::Buffer<ffi::F32>>()   \
      .Attr<float>("scale")

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxDecodeAttention, (Impl<float, ffi::F32>), BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxDecodeAttentionBf16, (Impl<uint16_t, ffi::BF16>), BIND(ffi::BF16));
