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

  // Modulated deformable convolution (DCNv2), torchvision's layout:
  //   out[n, o, ho, wo] = bias[o] + sum_{c in group(o), k} weight[o, c, k] * mask[n, g(c)*K + k, ho, wo]
  //       * bilinear(input[n, c], ho*sh - ph + ky*dh + dy, wo*sw - pw + kx*dw + dx)
  // (dy, dx) = offset[n, 2*(g(c)*K + k) + {0, 1}, ho, wo], g(c) = c / (Cin/offset_groups),
  // taps k = ky*KW + kx row-major, zero padding. input (N, Cin, H, W); weight
  // (Cout, Cin/groups, KH, KW); mask (N, offset_groups*K, Ho, Wo); bias (Cout).
  m.def("deform_conv2d(Tensor input, Tensor offset, Tensor mask, Tensor weight, Tensor bias, "
        "int[2] stride, int[2] padding, int[2] dilation, int groups, int offset_groups) -> Tensor");
  m.def("deform_conv2d_backward(Tensor grad_out, Tensor input, Tensor offset, Tensor mask, "
        "Tensor weight, int[2] stride, int[2] padding, int[2] dilation, int groups, int offset_groups)"
        " -> (Tensor grad_input, Tensor grad_offset, Tensor grad_mask, Tensor grad_weight, Tensor grad_bias)");
}
