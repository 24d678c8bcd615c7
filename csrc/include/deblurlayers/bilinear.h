// Bilinear interpolation math shared by the CPU and CUDA kernels.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
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

namespace deblurlayers {

// Bilinear sampling of an H x W map at a real-valued pixel position (x, y)
// with zero padding: pixel (i, j) holds its value at (x, y) = (j, i); taps
// outside the map read 0. A sample with x <= -1, x >= W, y <= -1 or y >= H
// touches no pixel and is skipped (`inside` = false), which is also what
// Deformable-DETR's kernel does.
//
// Tap t in 0..3 is pixel (y0 + t / 2, x0 + t % 2). `weight` is its
// interpolation weight; `dweight_dx` / `dweight_dy` its derivatives with
// respect to x and y (the same for a tap outside the map, whose value is 0,
// so the gradients of the zero-padded surface come out right).
//
// A NaN or infinite coordinate reads nothing, but, as in the PyTorch reference
// (grid_sample), it is not silently 0: `nan_x` / `nan_y` are 0 for a finite x / y
// and NaN otherwise, and the kernels add nan_x + nan_y to the sampled value,
// nan_y to d/dx and nan_x to d/dy (d/dx of a bilinear sample scales with the y
// weights, and the other way round). Gradients to the sampled map stay finite.
template <typename opmath_t>
struct ZeroPadBilinear {
  bool inside;
  opmath_t nan_x, nan_y;
  bool valid[4];
  int64_t offset[4];  // y * W + x of each valid tap
  opmath_t weight[4];
  opmath_t dweight_dx[4];
  opmath_t dweight_dy[4];
};

template <typename opmath_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE ZeroPadBilinear<opmath_t> zero_pad_bilinear(
    opmath_t x, opmath_t y, int64_t H, int64_t W) {
  ZeroPadBilinear<opmath_t> s;
  s.nan_x = x - x;  // IEEE: 0, or NaN for NaN and +-inf (the build never enables -ffinite-math-only)
  s.nan_y = y - y;
  s.inside = x > opmath_t(-1) && y > opmath_t(-1) && x < static_cast<opmath_t>(W) &&
             y < static_cast<opmath_t>(H);
  if (!s.inside) return s;
  // floor() of a value > -1: truncation toward zero is wrong only in (-1, 0).
  const int64_t x0 = x < 0 ? -1 : static_cast<int64_t>(x);
  const int64_t y0 = y < 0 ? -1 : static_cast<int64_t>(y);
  const opmath_t lx = x - static_cast<opmath_t>(x0), ly = y - static_cast<opmath_t>(y0);
  const opmath_t hx = 1 - lx, hy = 1 - ly;
  const bool col_ok[2] = {x0 >= 0, x0 + 1 < W};
  const bool row_ok[2] = {y0 >= 0, y0 + 1 < H};
  const opmath_t wx[2] = {hx, lx}, wy[2] = {hy, ly};
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const int r = t / 2, c = t % 2;
    s.valid[t] = row_ok[r] && col_ok[c];
    s.offset[t] = (y0 + r) * W + (x0 + c);
    s.weight[t] = wy[r] * wx[c];
    s.dweight_dx[t] = c ? wy[r] : -wy[r];
    s.dweight_dy[t] = r ? wx[c] : -wx[c];
  }
  return s;
}

}  // namespace deblurlayers

namespace deblurlayers {

// The same zero-padded bilinear sample, branch-free, for kernels that gather whole channel runs per
// corner (the DCN kernels, CPU and CUDA alike). Every corner gets a valid pixel index: a corner in
// the zero padding, and every corner of a sample that touches no pixel (x <= -1, x >= W, y <= -1,
// y >= H, or NaN), is clamped into the map and given weight 0 and derivatives 0. A loop over the
// four corners then needs no test, and on the CPU the computation vectorises across samples
// (compiled with -fno-trapping-math).
//
// Corner t is pixel (y0 + t / 2, x0 + t % 2); `weight`, `d_dx`, `d_dy` as in ZeroPadBilinear.
// A NaN or infinite coordinate has weights 0 (nothing is read or scattered), `nan` = NaN to add to
// the sampled value, and NaN derivatives across the axes (d_dx when y is not finite, d_dy when x
// is not), as grid_sample gives; `nan` is 0 otherwise.
template <typename opmath_t, typename index_t>
struct ClampedBilinear {
  index_t index[4];  // y * W + x, always inside the map
  opmath_t weight[4];
  opmath_t d_dx[4];
  opmath_t d_dy[4];
  opmath_t nan;
};

template <typename T>
C10_HOST_DEVICE C10_ALWAYS_INLINE T floor_of(T v) {
#ifdef __CUDA_ARCH__
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

template <typename opmath_t, typename index_t>
C10_HOST_DEVICE C10_ALWAYS_INLINE ClampedBilinear<opmath_t, index_t> clamped_bilinear(
    opmath_t x, opmath_t y, index_t H, index_t W) {
  const opmath_t one = 1, zero = 0, Hf = static_cast<opmath_t>(H), Wf = static_cast<opmath_t>(W);
  const opmath_t nan_x = x - x, nan_y = y - y;  // 0, or NaN for NaN and +-inf
  const opmath_t inside = (y > -one && x > -one && y < Hf && x < Wf) ? one : zero;
  y = inside != zero ? y : zero;
  x = inside != zero ? x : zero;
  // A true floor, so y0 in [-1, H - 1] and x0 in [-1, W - 1]. Truncating y + 1 instead is wrong
  // just below an integer: y = H - 2e-6 (float32) gives y + 1 = H + 1 after rounding, so y0 = H
  // took the full weight from row H, past the map.
  const opmath_t fy = floor_of(y), fx = floor_of(x);
  const index_t y0 = static_cast<index_t>(fy), x0 = static_cast<index_t>(fx);
  const opmath_t ly = y - fy, lx = x - fx, hy = one - ly, hx = one - lx;
  // Whether the corner rows / columns lie in the map (1) or in the zero padding (0).
  const opmath_t r0 = fy >= zero ? inside : zero, r1 = fy + one < Hf ? inside : zero;
  const opmath_t c0 = fx >= zero ? one : zero, c1 = fx + one < Wf ? one : zero;
  // floor() is exact, so y0 in [-1, H - 1] and one-sided clamps put every index in the map, before
  // any load (a weight of 0 does not make an out-of-bounds load safe).
  const index_t ya = y0 > 0 ? y0 : 0, yb = y0 + 1 < H - 1 ? y0 + 1 : H - 1;
  const index_t xa = x0 > 0 ? x0 : 0, xb = x0 + 1 < W - 1 ? x0 + 1 : W - 1;
  const opmath_t v00 = r0 * c0, v01 = r0 * c1, v10 = r1 * c0, v11 = r1 * c1;
  return {{ya * W + xa, ya * W + xb, yb * W + xa, yb * W + xb},
          {hy * hx * v00, hy * lx * v01, ly * hx * v10, ly * lx * v11},
          {-hy * v00 + nan_y, hy * v01 + nan_y, -ly * v10 + nan_y, ly * v11 + nan_y},
          {-hx * v00 + nan_x, -lx * v01 + nan_x, hx * v10 + nan_x, lx * v11 + nan_x},
          nan_x + nan_y};
}

}  // namespace deblurlayers
