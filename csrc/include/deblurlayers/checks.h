// TORCH_CHECK helpers whose messages name the argument, the expected layout
// and what was given. The Python op layer validates first with friendlier
// ValueErrors; these guard direct calls to torch.ops.deblurlayers.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace deblurlayers {

inline void check_dim(const at::Tensor& t, int64_t dim, const char* name,
                      const char* layout) {
  TORCH_CHECK(t.dim() == dim, name, ": expected a ", dim, "-d tensor ", layout,
              ", got shape ", t.sizes());
}

inline void check_floating(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name,
              ": expected a floating-point tensor, got dtype ", t.scalar_type());
}

inline void check_same_device_dtype(const at::Tensor& t, const at::Tensor& ref,
                                    const char* name, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, ": expected device ",
              ref.device(), " (that of ", ref_name, "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, ": expected dtype ",
              ref.scalar_type(), " (that of ", ref_name, "), got ",
              t.scalar_type());
}

}  // namespace deblurlayers
