// Every schema of the deblurlayers op library, in one place.
//
// Kernels register per backend with TORCH_LIBRARY_IMPL beside their op
// (csrc/<op>/cpu, csrc/<op>/cuda); fake kernels, autograd formulas and FLOP
// formulas are registered from Python once this library is loaded
// (deblurlayers/_native/registry.py). Ops are functional: they return new
// tensors and never mutate their inputs.
#include <torch/library.h>

TORCH_LIBRARY(deblurlayers, m) {
  // One level of the 2-D Haar transform. `scale` multiplies the +-1 butterfly:
  // 0.25 for DSTNet's averaging convention, 0.5 for the orthonormal one.
  // ll: (B, C, H/2, W/2); highs: (B, 3C, H/2, W/2), band-major
  // [W-difference | H-difference | diagonal].
  m.def("haar_dwt2d(Tensor x, float scale) -> (Tensor ll, Tensor highs)");
  // Inverse of haar_dwt2d for the matching scale (0.25 * 4 = 1 for "avg",
  // 0.5 for "ortho"). The Haar butterfly matrix is symmetric, so each op is
  // the other's backward: no separate *_backward op is needed.
  m.def("haar_idwt2d(Tensor ll, Tensor highs, float scale) -> Tensor");

  // Per-pixel, per-channel k x k filtering with zero padding:
  //   out[b,c,y,x] = sum_{ky,kx} K[b, g(c)*k*k + ky*k + kx](y, x) * x[b,c,y+ky-k/2,x+kx-k/2]
  // kernels: (B, G*k*k, Hk, Wk), g(c) = c / (C/G). A kernel map smaller than
  // x is bilinearly upsampled to (H, W) on the fly (align_corners=False).
  m.def("pixel_dynamic_filter(Tensor x, Tensor kernels, int kernel_size) -> Tensor");
  m.def("pixel_dynamic_filter_backward(Tensor grad_out, Tensor x, Tensor kernels, int kernel_size)"
        " -> (Tensor grad_x, Tensor grad_kernels)");
}
