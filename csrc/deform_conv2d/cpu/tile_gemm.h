// The forward's per-tile GEMM, out[p][co] = bias[co] + sum_k cols[p][k] * w[co][k], as an
// AVX-512 register-blocked kernel for fp32.
//
// Why not at::addmm: on AMD CPUs MKL's sgemm takes its AVX2 path (about 135 GFLOP/s on two Zen 5
// cores for this product, a third of what the FMA units sustain), and each tile's call pays the
// dispatcher. The kernel below multiplies the tile while its columns are still in L2, with 12
// pixels x 32 output channels of accumulators (24 zmm), so every column value loaded is used 32
// times and every weight vector 12 times. It runs only where the CPU has AVX-512F (checked at run
// time); elsewhere, and for other dtypes, the caller keeps at::addmm.
//
// Layouts: the tile's columns are (pixels, K) row-major (Columns in deform_conv2d_cpu.cpp); the
// weight is packed once per call into panels of 32 output channels, (panels, K, 32), zero-padded,
// so that the kernel's weight loads are aligned and unmasked; the result is written as
// (pixels, Cout) and transposed into the NCHW output by the caller. Each output is one chain of
// FMAs over k in order, so a pixel's result does not depend on the tile or the batch around it.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)
#define DEBLURLAYERS_TILE_GEMM_AVX512 1
#include <immintrin.h>
#endif

namespace deblurlayers {
namespace deform_conv2d {

constexpr int64_t kPanel = 32;      // output channels per weight panel: two zmm
constexpr int64_t kPanelRows = 12;  // pixels per register block: 24 accumulators, 8 zmm left

inline bool tile_gemm_available() {
#ifdef DEBLURLAYERS_TILE_GEMM_AVX512
  static const bool available = __builtin_cpu_supports("avx512f");
  return available;
#else
  return false;
#endif
}

// The weight and bias of every weight group, packed for tile_gemm: panels of kPanel output
// channels, zero-padded.
struct PackedWeight {
  at::Tensor weight;  // (groups, panels, K, kPanel)
  at::Tensor bias;    // (groups, panels * kPanel)
  const float* group_weight(int64_t g) const { return weight.const_data_ptr<float>() + g * weight.stride(0); }
  const float* group_bias(int64_t g) const { return bias.const_data_ptr<float>() + g * bias.stride(0); }
};

// weight (groups, Cout/groups, K), bias (groups, Cout/groups).
inline PackedWeight pack_weight(const at::Tensor& weight, const at::Tensor& bias) {
  const int64_t groups = weight.size(0), cout_g = weight.size(1), K = weight.size(2);
  const int64_t panels = (cout_g + kPanel - 1) / kPanel;
  at::Tensor w = at::zeros({groups, panels * kPanel, K}, weight.options());
  w.narrow(1, 0, cout_g).copy_(weight);
  at::Tensor b = at::zeros({groups, panels * kPanel}, bias.options());
  b.narrow(1, 0, cout_g).copy_(bias);
  return {w.view({groups, panels, kPanel, K}).transpose(2, 3).contiguous(), b};
}

#ifdef DEBLURLAYERS_TILE_GEMM_AVX512

// out[r][0:32] (masked) = bias + sum_k a[r * K + k] * panel[k][0:32], for r < MR.
template <int MR>
__attribute__((target("avx512f"))) void panel_kernel(const float* __restrict a, int64_t K,
                                                     const float* __restrict panel, const float* __restrict bias,
                                                     float* __restrict out, int64_t ldo, __mmask16 lo, __mmask16 hi) {
  __m512 acc_lo[MR], acc_hi[MR];
  const __m512 bias_lo = _mm512_load_ps(bias), bias_hi = _mm512_load_ps(bias + 16);
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) acc_lo[r] = bias_lo, acc_hi[r] = bias_hi;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w_lo = _mm512_load_ps(panel + k * kPanel), w_hi = _mm512_load_ps(panel + k * kPanel + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 x = _mm512_set1_ps(a[r * K + k]);
      acc_lo[r] = _mm512_fmadd_ps(x, w_lo, acc_lo[r]);
      acc_hi[r] = _mm512_fmadd_ps(x, w_hi, acc_hi[r]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(out + r * ldo, lo, acc_lo[r]);
    _mm512_mask_storeu_ps(out + r * ldo + 16, hi, acc_hi[r]);
  }
}

// panel_kernel for the last, partial block of rows < MR.
template <int MR>
void panel_kernel_rows(int rows, const float* a, int64_t K, const float* panel, const float* bias,
                       float* out, int64_t ldo, __mmask16 lo, __mmask16 hi) {
  if constexpr (MR > 1) {
    if (rows < MR) return panel_kernel_rows<MR - 1>(rows, a, K, panel, bias, out, ldo, lo, hi);
  }
  panel_kernel<MR>(a, K, panel, bias, out, ldo, lo, hi);
}

// out (rows, cout) with row stride ldo = bias + a (rows, K; row stride K) @ w, w packed by
// PackedWeight::group_weight (one group: (panels, K, kPanel)).
inline void tile_gemm(const float* a, int64_t K, int64_t rows, const float* packed, const float* bias, int64_t cout,
                      float* out, int64_t ldo) {
  for (int64_t c0 = 0; c0 < cout; c0 += kPanel) {
    const int64_t width = std::min(kPanel, cout - c0);
    const __mmask16 lo = static_cast<__mmask16>((1u << std::min<int64_t>(width, 16)) - 1);
    const __mmask16 hi = static_cast<__mmask16>(width > 16 ? (1u << (width - 16)) - 1 : 0);
    const float* panel = packed + (c0 / kPanel) * K * kPanel;
    for (int64_t r0 = 0; r0 < rows; r0 += kPanelRows) {
      panel_kernel_rows<kPanelRows>(static_cast<int>(std::min(kPanelRows, rows - r0)), a + r0 * K, K, panel,
                                    bias + c0, out + r0 * ldo + c0, ldo, lo, hi);
    }
  }
}

#else

inline void tile_gemm(const float*, int64_t, int64_t, const float*, const float*, int64_t, float*, int64_t) {
  TORCH_CHECK(false, "deform_conv2d: the AVX-512 tile GEMM is not compiled for this CPU");
}

#endif

}  // namespace deform_conv2d
}  // namespace deblurlayers
