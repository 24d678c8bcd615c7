// Shape checks and output allocation shared by the CPU and CUDA Haar kernels.
#pragma once

#include <ATen/ATen.h>

#include "deblurlayers/checks.h"

namespace deblurlayers {
namespace haar {

inline void check_dwt_input(const at::Tensor& x) {
  check_dim(x, 4, "haar_dwt2d: x", "(B, C, H, W)");
  check_floating(x, "haar_dwt2d: x");
  TORCH_CHECK(x.size(2) % 2 == 0 && x.size(3) % 2 == 0,
              "haar_dwt2d: x: expected even H and W, got shape ", x.sizes());
}

inline void check_idwt_inputs(const at::Tensor& ll, const at::Tensor& highs) {
  check_dim(ll, 4, "haar_idwt2d: ll", "(B, C, h, w)");
  check_dim(highs, 4, "haar_idwt2d: highs", "(B, 3C, h, w)");
  check_floating(ll, "haar_idwt2d: ll");
  check_same_device_dtype(highs, ll, "haar_idwt2d: highs", "ll");
  TORCH_CHECK(highs.size(0) == ll.size(0) && highs.size(1) == 3 * ll.size(1) &&
                  highs.size(2) == ll.size(2) && highs.size(3) == ll.size(3),
              "haar_idwt2d: highs: expected shape (B, 3C, h, w) = (",
              ll.size(0), ", ", 3 * ll.size(1), ", ", ll.size(2), ", ",
              ll.size(3), ") from ll, got ", highs.sizes());
}

// The layout of the outputs: channels-last for a channels-last input (that is
// not also NCHW-contiguous, as C = 1 or 1x1 maps are), else NCHW. The fake
// kernels in deblurlayers/ops/haar.py follow the same rule.
inline at::MemoryFormat output_layout(const at::Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

}  // namespace haar
}  // namespace deblurlayers
