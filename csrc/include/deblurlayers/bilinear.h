// Bilinear interpolation math shared by the CPU and CUDA kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

namespace deblurlayers {

// One axis of a bilinear resize with align_corners=False, exactly as PyTorch's
// upsample_bilinear2d computes it (area_pixel_compute_source_index):
//   src = max((dst + 0.5) * in/out - 0.5, 0),  i0 = min(floor(src), in - 1),
//   i1 = i0 + (i0 < in - 1),  value = (1 - l1) * v[i0] + l1 * v[i1].
template <typename opmath_t>
struct ResizeTap {
  int64_t i0, i1;
  opmath_t l1;
};

template <typename opmath_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE ResizeTap<opmath_t> resize_tap(
    int64_t dst, int64_t in_size, int64_t out_size) {
  const opmath_t scale = static_cast<opmath_t>(in_size) / out_size;
  opmath_t src = (static_cast<opmath_t>(dst) + opmath_t(0.5)) * scale - opmath_t(0.5);
  if (src < 0) src = 0;
  int64_t i0 = static_cast<int64_t>(src);
  if (i0 > in_size - 1) i0 = in_size - 1;
  const int64_t i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
  opmath_t l1 = src - static_cast<opmath_t>(i0);
  if (l1 > 1) l1 = 1;
  return {i0, i1, l1};
}

template <typename opmath_t, typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE opmath_t lerp_tap(const T* v,
                                                    ResizeTap<opmath_t> t) {
  return (1 - t.l1) * static_cast<opmath_t>(v[t.i0]) +
         t.l1 * static_cast<opmath_t>(v[t.i1]);
}

}  // namespace deblurlayers
