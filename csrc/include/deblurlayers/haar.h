// Per-element Haar math shared by the CPU and CUDA kernels, so the CPU tests
// exercise the arithmetic the GPU runs.
#pragma once

#include <c10/macros/Macros.h>

namespace deblurlayers {

// The 4x4 Haar butterfly on a 2x2 block (a b / c d), times `scale`:
//   o0 = a+b+c+d   (LL)
//   o1 = a-b+c-d   (difference along W)
//   o2 = a+b-c-d   (difference along H)
//   o3 = a-b-c+d   (diagonal)
// The matrix is symmetric and squares to 4*I, so the same butterfly applied
// to (ll, h1, h2, h3) returns the block (a, b, c, d) times 4*scale: it is the
// inverse transform and the adjoint (hence the backward) of both directions.
template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE void haar_butterfly(T a, T b, T c, T d,
                                                      T scale, T& o0, T& o1,
                                                      T& o2, T& o3) {
  const T sum_top = a + b, sum_bottom = c + d;
  const T diff_top = a - b, diff_bottom = c - d;
  o0 = (sum_top + sum_bottom) * scale;
  o1 = (diff_top + diff_bottom) * scale;
  o2 = (sum_top - sum_bottom) * scale;
  o3 = (diff_top - diff_bottom) * scale;
}

}  // namespace deblurlayers
