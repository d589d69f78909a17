// The two transforms of a Winograd F(4x4, 3x3) convolution (ar_jax/tokenizers/winograd.py), float32, NHWC:
//   input:  x [B, H, W, C] -> U [36, B*th*tw, C], U[6a+b, tile] = (B^T d B)[a, b] for the tile's 6x6 input block d
//           (rows 4ty-1 .. 4ty+4, columns 4tx-1 .. 4tx+4, zero outside the image: 'same' padding);
//   output: M [36, B*th*tw, D], bias [D] -> y [B, H, W, D], the tile's 4x4 block (A^T m A) + bias, cropped to H x W.
// Each reads its input once and writes its output once (XLA made one pass per transformed plane, re-reading the
// input with strides). Channels in chunks of 64, vectorised by the compiler; OpenMP over rows of tiles.
#include <algorithm>
#include <cstdint>
#include <cstring>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

constexpr int64_t CB = 64;  // channels a chunk

// out[i][c] = sum_k B^T[i][k] in[k][c], i, k < 6.
static inline void bt(const float* const in[6], float* const out[6], int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    float d0 = in[0][c], d1 = in[1][c], d2 = in[2][c], d3 = in[3][c], d4 = in[4][c], d5 = in[5][c];
    out[0][c] = 4.f * d0 - 5.f * d2 + d4;
    out[1][c] = -4.f * (d1 + d2) + d3 + d4;
    out[2][c] = 4.f * (d1 - d2) - d3 + d4;
    out[3][c] = 2.f * (d3 - d1) - d2 + d4;
    out[4][c] = 2.f * (d1 - d3) - d2 + d4;
    out[5][c] = 4.f * d1 - 5.f * d3 + d5;
  }
}

// out[i][c] = sum_k A^T[i][k] in[k][c] (+ bias[c]), i < 4, k < 6.
static inline void at(const float* const in[6], float* const out[4], int64_t n, const float* bias) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) {
    float m0 = in[0][c], m1 = in[1][c], m2 = in[2][c], m3 = in[3][c], m4 = in[4][c], m5 = in[5][c];
    float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4, b = bias ? bias[c] : 0.f;
    out[0][c] = m0 + s12 + s34 + b;
    out[1][c] = d12 + 2.f * d34 + b;
    out[2][c] = s12 + 4.f * s34 + b;
    out[3][c] = d12 + 8.f * d34 + m5 + b;
  }
}

alignas(64) static const float ZEROS[CB] = {};  // the padding's rows

static ffi::Error Input(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> u) {
  auto xd = x.dimensions();
  if (xd.size() != 4) return ffi::Error(ffi::ErrorCode::kInvalidArgument, "winograd_input: x [B, H, W, C]");
  const int64_t B = xd[0], H = xd[1], W = xd[2], C = xd[3], th = (H + 3) / 4, tw = (W + 3) / 4;
  const int64_t P = B * th * tw;
  if (u->dimensions().size() != 3 || u->dimensions()[0] != 36 || u->dimensions()[1] != P ||
      u->dimensions()[2] != C)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "winograd_input: U must be [36, B*th*tw, C]");
  const float* xs = x.typed_data();
  float* us = u->typed_data();
#pragma omp parallel for schedule(static) num_threads(omp_get_num_procs())
  for (int64_t row = 0; row < B * th; ++row) {
    const int64_t b = row / th, ty = row % th;
    alignas(64) float t[6][6][CB];
    for (int64_t tx = 0; tx < tw; ++tx) {
      const int64_t p = row * tw + tx;
      for (int64_t c0 = 0; c0 < C; c0 += CB) {
        const int64_t n = std::min(CB, C - c0);
        for (int j = 0; j < 6; ++j) {  // columns: t[., j] = B^T d[., j], d read in place (zeros outside)
          const int64_t xx = 4 * tx - 1 + j;
          const float* in[6];
          for (int k = 0; k < 6; ++k) {
            const int64_t yy = 4 * ty - 1 + k;
            in[k] = (yy < 0 || yy >= H || xx < 0 || xx >= W) ? ZEROS : xs + ((b * H + yy) * W + xx) * C + c0;
          }
          float* out[6] = {t[0][j], t[1][j], t[2][j], t[3][j], t[4][j], t[5][j]};
          bt(in, out, n);
        }
        for (int i = 0; i < 6; ++i) {  // rows: U[i, .] = t[i, .] B, written in place
          const float* in[6] = {t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]};
          float* out[6];
          for (int j = 0; j < 6; ++j) out[j] = us + ((6 * i + j) * P + p) * C + c0;
          bt(in, out, n);
        }
      }
    }
  }
  return ffi::Error::Success();
}

static ffi::Error Output(ffi::Buffer<ffi::F32> m, ffi::Buffer<ffi::F32> bias, ffi::ResultBuffer<ffi::F32> y) {
  auto md = m.dimensions(), yd = y->dimensions();
  if (md.size() != 3 || yd.size() != 4 || md[0] != 36 || md[2] != yd[3] || bias.element_count() != yd[3])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "winograd_output: M [36, P, D], bias [D], y [B, H, W, D]");
  const int64_t B = yd[0], H = yd[1], W = yd[2], D = yd[3], th = (H + 3) / 4, tw = (W + 3) / 4, P = md[1];
  if (P != B * th * tw) return ffi::Error(ffi::ErrorCode::kInvalidArgument, "winograd_output: P != B*th*tw");
  const float* ms = m.typed_data();
  const float* bs = bias.typed_data();
  float* ys = y->typed_data();
#pragma omp parallel for schedule(static) num_threads(omp_get_num_procs())
  for (int64_t row = 0; row < B * th; ++row) {
    const int64_t b = row / th, ty = row % th;
    alignas(64) float s[4][6][CB], sink[CB];
    for (int64_t tx = 0; tx < tw; ++tx) {
      const int64_t p = row * tw + tx;
      for (int64_t c0 = 0; c0 < D; c0 += CB) {
        const int64_t n = std::min(CB, D - c0);
        for (int j = 0; j < 6; ++j) {  // columns: s[., j] = A^T m[., j]
          const float* in[6];
          for (int k = 0; k < 6; ++k) in[k] = ms + ((6 * k + j) * P + p) * D + c0;
          float* out[4] = {s[0][j], s[1][j], s[2][j], s[3][j]};
          at(in, out, n, nullptr);
        }
        for (int i = 0; i < 4; ++i) {  // rows: y[i, .] = s[i, .] A + bias, written in place (cropped: a sink)
          const int64_t yy = 4 * ty + i;
          if (yy >= H) break;
          const float* in[6] = {s[i][0], s[i][1], s[i][2], s[i][3], s[i][4], s[i][5]};
          float* out[4];
          for (int j = 0; j < 4; ++j) {
            const int64_t xx = 4 * tx + j;
            out[j] = xx < W ? ys + ((b * H + yy) * W + xx) * D + c0 : sink;
          }
          at(in, out, n, bs + c0);
        }
      }
    }
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxWinogradInput, Input,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(ArJaxWinogradOutput, Output,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
