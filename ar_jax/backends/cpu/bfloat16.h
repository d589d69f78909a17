// bfloat16 -> float32 for the decoding kernels: a bfloat16 is the top 16 bits of a float32.
#pragma once
#include <immintrin.h>
#include <cstdint>

static inline float widen(float v) { return v; }
static inline float widen(uint16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline __m256 load8(const uint16_t* p) {  // 8 bfloat16 -> float32, each into the top of its lane
  __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
