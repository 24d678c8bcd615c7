// Shape checks shared by the CPU and CUDA pixel dynamic filter kernels.
#pragma once

#include <ATen/ATen.h>

#include "deblurlayers/checks.h"

namespace deblurlayers {
namespace pixel_dynamic_filter {

struct Shape {
  int64_t B, C, H, W;  // x
  int64_t G, k, Hk, Wk;  // kernels: (B, G*k*k, Hk, Wk)
  int64_t channels_per_group() const { return C / G; }
  int64_t taps() const { return k * k; }
  bool full_resolution() const { return Hk == H && Wk == W; }
};

inline Shape check_inputs(const at::Tensor& x, const at::Tensor& kernels,
                          int64_t kernel_size, const char* op) {
  const std::string x_name = std::string(op) + ": x";
  const std::string k_name = std::string(op) + ": kernels";
  check_dim(x, 4, x_name.c_str(), "(B, C, H, W)");
  check_dim(kernels, 4, k_name.c_str(), "(B, G*k*k, Hk, Wk)");
  check_floating(x, x_name.c_str());
  check_same_device_dtype(kernels, x, k_name.c_str(), "x");
  TORCH_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, op,
              ": kernel_size: expected a positive odd integer, got ", kernel_size);
  const int64_t taps = kernel_size * kernel_size;
  Shape s{x.size(0), x.size(1), x.size(2), x.size(3),
          kernels.size(1) / taps, kernel_size, kernels.size(2), kernels.size(3)};
  TORCH_CHECK(kernels.size(0) == s.B && kernels.size(1) % taps == 0 && s.G >= 1 &&
                  s.C % s.G == 0,
              k_name, ": expected shape (B, G*k*k, Hk, Wk) with B = ", s.B,
              ", k = ", kernel_size, " and G dividing C = ", s.C, ", got ",
              kernels.sizes());
  TORCH_CHECK(s.Hk >= 1 && s.Wk >= 1 && s.Hk <= s.H && s.Wk <= s.W, k_name,
              ": expected 1 <= Hk <= H = ", s.H, " and 1 <= Wk <= W = ", s.W,
              ", got ", kernels.sizes());
  return s;
}

}  // namespace pixel_dynamic_filter
}  // namespace deblurlayers
