// Shapes, checks and per-element sampling shared by the CPU and CUDA modulated
// deformable convolution (DCNv2) kernels. Layouts are torchvision's:
//   input  (N, Cin, H, W)          weight (Cout, Cin/groups, KH, KW)
//   offset (N, 2*OG*KH*KW, Ho, Wo) channel (g*K + k)*2 + {0: dy, 1: dx}, taps k row-major
//   mask   (N, OG*KH*KW, Ho, Wo)   channel g*K + k
//   bias   (Cout)
// Input channel c belongs to offset group c / (Cin/OG). Tap k = (ky, kx) of
// output pixel (ho, wo) samples input channel c bilinearly (zero padding) at
//   y = ho*sh - ph + ky*dh + dy,  x = wo*sw - pw + kx*dw + dx.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "deblurlayers/bilinear.h"
#include "deblurlayers/checks.h"

namespace deblurlayers {
namespace deform_conv2d {

struct Shape {
  int64_t N, Cin, H, W, Cout, KH, KW, Ho, Wo;
  int64_t sh, sw, ph, pw, dh, dw;
  int64_t groups, offset_groups;
  C10_HOST_DEVICE int64_t K() const { return KH * KW; }
  C10_HOST_DEVICE int64_t P() const { return Ho * Wo; }
  C10_HOST_DEVICE int64_t channels_per_offset_group() const { return Cin / offset_groups; }
  // Column-matrix rows: (c, k) with c slowest, matching weight.view(Cout, Cin/groups * K).
  C10_HOST_DEVICE int64_t rows() const { return Cin * K(); }
};

// The bilinear corners of tap k of output pixel p (flattened ho*Wo + wo), for
// sample n and offset group g: clamped_bilinear, the math the CPU kernel uses
// for its blocks of pixels.
template <typename opmath_t, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE ClampedBilinear<opmath_t, int64_t> sample_taps(
    const Shape& s, const scalar_t* offset, int64_t n, int64_t g, int64_t k, int64_t p) {
  const int64_t ho = p / s.Wo, wo = p % s.Wo, ky = k / s.KW, kx = k % s.KW;
  const int64_t channel = (n * s.offset_groups + g) * s.K() + k;  // of (N, OG*K, ...)
  const scalar_t* o = offset + 2 * channel * s.P() + p;
  const opmath_t y = static_cast<opmath_t>(ho * s.sh - s.ph + ky * s.dh) + static_cast<opmath_t>(o[0]);
  const opmath_t x = static_cast<opmath_t>(wo * s.sw - s.pw + kx * s.dw) + static_cast<opmath_t>(o[s.P()]);
  return clamped_bilinear<opmath_t, int64_t>(x, y, s.H, s.W);
}

// Value of the sampled surface of one H x W channel plane at the corners.
template <typename opmath_t, typename scalar_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE opmath_t sample_value(const ClampedBilinear<opmath_t, int64_t>& t,
                                                        const scalar_t* plane) {
  opmath_t v = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) v += t.weight[i] * static_cast<opmath_t>(plane[t.index[i]]);
  return v + t.nan;
}

// A 1-d empty mask means no modulation (DCNv1), as torchvision's use_mask=false: the kernels then
// read no mask and write no mask gradient, and no full-size tensor of ones is ever made.
inline bool has_mask(const at::Tensor& mask) { return !(mask.dim() == 1 && mask.numel() == 0); }

inline Shape check_inputs(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                          const at::Tensor& weight, at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation, int64_t groups, int64_t offset_groups,
                          const char* op) {
  const std::string p = std::string(op) + ": ";
  check_dim(input, 4, (p + "input").c_str(), "(N, Cin, H, W)");
  check_dim(offset, 4, (p + "offset").c_str(), "(N, 2*offset_groups*KH*KW, Ho, Wo)");
  if (has_mask(mask)) check_dim(mask, 4, (p + "mask").c_str(), "(N, offset_groups*KH*KW, Ho, Wo), or empty");
  check_dim(weight, 4, (p + "weight").c_str(), "(Cout, Cin/groups, KH, KW)");
  check_floating(input, (p + "input").c_str());
  check_same_device_dtype(offset, input, (p + "offset").c_str(), "input");
  check_same_device_dtype(mask, input, (p + "mask").c_str(), "input");
  check_same_device_dtype(weight, input, (p + "weight").c_str(), "input");
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, p,
              "stride, padding, dilation: expected two values each");
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0 && dilation[0] > 0 && dilation[1] > 0 &&
                  padding[0] >= 0 && padding[1] >= 0,
              p, "expected stride > 0, dilation > 0, padding >= 0, got ", stride, ", ", dilation,
              ", ", padding);
  Shape s{};
  s.N = input.size(0), s.Cin = input.size(1), s.H = input.size(2), s.W = input.size(3);
  s.Cout = weight.size(0), s.KH = weight.size(2), s.KW = weight.size(3);
  s.sh = stride[0], s.sw = stride[1], s.ph = padding[0], s.pw = padding[1];
  s.dh = dilation[0], s.dw = dilation[1], s.groups = groups, s.offset_groups = offset_groups;
  TORCH_CHECK(groups > 0 && s.Cin % groups == 0 && s.Cout % groups == 0, p,
              "groups: expected a positive divisor of Cin = ", s.Cin, " and Cout = ", s.Cout,
              ", got ", groups);
  TORCH_CHECK(weight.size(1) * groups == s.Cin, p, "weight: expected shape (Cout, Cin/groups = ",
              s.Cin / groups, ", KH, KW), got ", weight.sizes());
  TORCH_CHECK(offset_groups > 0 && s.Cin % offset_groups == 0, p,
              "offset_groups: expected a positive divisor of Cin = ", s.Cin, ", got ", offset_groups);
  // The CPU kernel indexes a channel plane with int32.
  TORCH_CHECK(s.H * s.W <= std::numeric_limits<int32_t>::max(), p, "input: planes of more than 2^31 - 1 "
              "pixels are not supported, got ", s.H, "x", s.W);
  s.Ho = (s.H + 2 * s.ph - s.dh * (s.KH - 1) - 1) / s.sh + 1;
  s.Wo = (s.W + 2 * s.pw - s.dw * (s.KW - 1) - 1) / s.sw + 1;
  TORCH_CHECK(s.Ho > 0 && s.Wo > 0, p, "the ", s.KH, "x", s.KW, " kernel (dilation ", dilation,
              ", padding ", padding, ") does not fit the ", s.H, "x", s.W, " input");
  const std::vector<int64_t> want_offset{s.N, 2 * offset_groups * s.K(), s.Ho, s.Wo};
  const std::vector<int64_t> want_mask{s.N, offset_groups * s.K(), s.Ho, s.Wo};
  TORCH_CHECK(offset.sizes() == at::IntArrayRef(want_offset), p, "offset: expected shape ",
              at::IntArrayRef(want_offset), ", got ", offset.sizes());
  TORCH_CHECK(!has_mask(mask) || mask.sizes() == at::IntArrayRef(want_mask), p, "mask: expected shape ",
              at::IntArrayRef(want_mask), " (or an empty 1-d tensor for none), got ", mask.sizes());
  return s;
}

inline void check_bias(const at::Tensor& bias, const at::Tensor& input, const Shape& s, const char* op) {
  const std::string p = std::string(op) + ": bias";
  check_same_device_dtype(bias, input, p.c_str(), "input");
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == s.Cout, p, ": expected shape (", s.Cout,
              ",), got ", bias.sizes());
}

inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& input, const Shape& s,
                           const char* op) {
  const std::string p = std::string(op) + ": grad_out";
  check_same_device_dtype(grad_out, input, p.c_str(), "input");
  const std::vector<int64_t> want{s.N, s.Cout, s.Ho, s.Wo};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(want), p, ": expected shape ",
              at::IntArrayRef(want), ", got ", grad_out.sizes());
}

// Output pixels per column chunk: the (Cin*K, chunk) column buffer stays
// below `budget` elements (at least one row of work).
inline int64_t chunk_pixels(const Shape& s, int64_t budget = int64_t(1) << 22) {
  return std::max<int64_t>(std::min<int64_t>(s.P(), budget / std::max<int64_t>(1, s.rows())), 1);
}

}  // namespace deform_conv2d
}  // namespace deblurlayers
