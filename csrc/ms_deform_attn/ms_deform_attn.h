// Shapes and checks shared by the CPU and CUDA multi-scale deformable
// attention kernels (Deformable-DETR's op).
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <string>

#include "deblurlayers/checks.h"

namespace deblurlayers {
namespace ms_deform_attn {

struct Shape {
  int64_t N, S, M, D;  // value: (N, S, M, D)
  int64_t Lq, L, P;    // sampling_locations: (N, Lq, M, L, P, 2)
  // Offset of sample (n, q, m, l, p) in attention_weights; twice that in
  // sampling_locations.
  C10_HOST_DEVICE int64_t sample_index(int64_t nq, int64_t m, int64_t l, int64_t p) const {
    return ((nq * M + m) * L + l) * P + p;
  }
};

inline Shape check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                          const at::Tensor& level_start_index,
                          const at::Tensor& sampling_locations,
                          const at::Tensor& attention_weights, const char* op) {
  const std::string p = std::string(op) + ": ";
  check_dim(value, 4, (p + "value").c_str(), "(N, S, M, D)");
  check_dim(spatial_shapes, 2, (p + "spatial_shapes").c_str(), "(L, 2)");
  check_dim(level_start_index, 1, (p + "level_start_index").c_str(), "(L,)");
  check_dim(sampling_locations, 6, (p + "sampling_locations").c_str(), "(N, Lq, M, L, P, 2)");
  check_dim(attention_weights, 5, (p + "attention_weights").c_str(), "(N, Lq, M, L, P)");
  check_floating(value, (p + "value").c_str());
  check_same_device_dtype(sampling_locations, value, (p + "sampling_locations").c_str(), "value");
  check_same_device_dtype(attention_weights, value, (p + "attention_weights").c_str(), "value");
  const auto check_index_tensor = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == at::kLong, p, name, ": expected dtype torch.int64, got ",
                t.scalar_type());
    TORCH_CHECK(t.device() == value.device(), p, name, ": expected device ", value.device(),
                " (that of value), got ", t.device());
  };
  check_index_tensor(spatial_shapes, "spatial_shapes");
  check_index_tensor(level_start_index, "level_start_index");
  const Shape s{value.size(0), value.size(1), value.size(2), value.size(3),
                sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
  TORCH_CHECK(spatial_shapes.size(0) == s.L && spatial_shapes.size(1) == 2 &&
                  level_start_index.size(0) == s.L,
              p, "spatial_shapes / level_start_index: expected shapes (", s.L, ", 2) / (", s.L,
              ",) for L = ", s.L, " levels (sampling_locations.shape[3]), got ",
              spatial_shapes.sizes(), " / ", level_start_index.sizes());
  TORCH_CHECK(sampling_locations.size(0) == s.N && sampling_locations.size(2) == s.M &&
                  sampling_locations.size(5) == 2,
              p, "sampling_locations: expected shape (N, Lq, M, L, P, 2) with N = ", s.N,
              ", M = ", s.M, ", got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5), p,
              "attention_weights: expected shape ", sampling_locations.sizes().slice(0, 5),
              " (sampling_locations without its last axis), got ", attention_weights.sizes());
  if (spatial_shapes.device().is_cpu()) {
    // On a GPU these values live on the device; reading them would stall the
    // stream, so there the Python layer validates them (eagerly) instead.
    const at::Tensor shapes = spatial_shapes.contiguous(), starts = level_start_index.contiguous();
    const int64_t* hw = shapes.const_data_ptr<int64_t>();
    const int64_t* st = starts.const_data_ptr<int64_t>();
    int64_t total = 0;
    for (int64_t l = 0; l < s.L; ++l) {
      TORCH_CHECK(hw[2 * l] >= 1 && hw[2 * l + 1] >= 1, p, "spatial_shapes: level ", l,
                  " has shape (", hw[2 * l], ", ", hw[2 * l + 1], "); expected positive sizes");
      TORCH_CHECK(st[l] == total, p, "level_start_index: expected the exclusive prefix sum of H*W, ",
                  "level ", l, " should start at ", total, ", got ", st[l]);
      total += hw[2 * l] * hw[2 * l + 1];
    }
    TORCH_CHECK(total == s.S, p, "spatial_shapes: the levels hold sum(H*W) = ", total,
                " positions but value has S = ", s.S);
  }
  return s;
}

// grad_out of ms_deform_attn_backward: (N, Lq, M*D), value's device and dtype.
inline void check_grad_out(const at::Tensor& grad_out, const at::Tensor& value, const Shape& s) {
  check_same_device_dtype(grad_out, value, "ms_deform_attn_backward: grad_out", "value");
  TORCH_CHECK(grad_out.dim() == 3 && grad_out.size(0) == s.N && grad_out.size(1) == s.Lq &&
                  grad_out.size(2) == s.M * s.D,
              "ms_deform_attn_backward: grad_out: expected shape (", s.N, ", ", s.Lq, ", ", s.M * s.D,
              "), got ", grad_out.sizes());
}

}  // namespace ms_deform_attn
}  // namespace deblurlayers
