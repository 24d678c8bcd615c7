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

  // Multi-scale deformable attention (Deformable-DETR's op, same signature):
  //   out[n, q, m*D + d] = sum_{l, p} A[n,q,m,l,p] *
  //       bilinear(value_l[n, :, :, m, d], loc_x * W_l - 0.5, loc_y * H_l - 0.5)
  // value: (N, S, M, D) with level l at rows [level_start_index[l], +H_l*W_l);
  // spatial_shapes: (L, 2) int64 (H_l, W_l); sampling_locations:
  // (N, Lq, M, L, P, 2) normalised (x, y); attention_weights: (N, Lq, M, L, P);
  // zero padding. Returns (N, Lq, M*D).
  m.def("ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
        "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def("ms_deform_attn_backward(Tensor grad_out, Tensor value, Tensor spatial_shapes, "
        "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights)"
        " -> (Tensor grad_value, Tensor grad_sampling_locations, Tensor grad_attention_weights)");
}
