// Per-pixel, per-channel k x k dynamic filtering on the CPU.
//
// Work is split into rows of one (sample, kernel group): the k*k weight rows
// of that output row are built once (interpolated from a low-resolution
// kernel map when needed, so the full-resolution map is never stored) and
// then applied to every channel of the group with contiguous, vectorisable
// inner loops. Every output element is written by exactly one task, so the
// kernels are deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../pixel_dynamic_filter.h"
#include "deblurlayers/alloc.h"
#include "deblurlayers/bilinear.h"

namespace deblurlayers {
namespace pixel_dynamic_filter {
namespace {

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

// Precomputed horizontal resize taps (shared by every row).
template <typename opmath_t>
std::vector<ResizeTap<opmath_t>> x_taps(const Shape& s) {
  std::vector<ResizeTap<opmath_t>> taps(s.W);
  for (int64_t x = 0; x < s.W; ++x) taps[x] = resize_tap<opmath_t>(x, s.Wk, s.W);
  return taps;
}

// dst[(t - t0) * W + x] = weight of tap t at output pixel (y, x), t in [t0, t1),
// for the kernel planes `kplanes` (= kernels[b, g*k*k], Hk x Wk each).
template <typename scalar_t>
void weight_rows(const scalar_t* kplanes, int64_t y, int64_t t0, int64_t t1,
                 const Shape& s, const std::vector<ResizeTap<opmath<scalar_t>>>& xt,
                 std::vector<opmath<scalar_t>>& row_buf, opmath<scalar_t>* dst) {
  using opmath_t = opmath<scalar_t>;
  const int64_t plane = s.Hk * s.Wk;
  if (s.full_resolution()) {
    for (int64_t t = t0; t < t1; ++t) {
      const scalar_t* src = kplanes + t * plane + y * s.W;
      std::copy(src, src + s.W, dst + (t - t0) * s.W);
    }
    return;
  }
  const ResizeTap<opmath_t> ty = resize_tap<opmath_t>(y, s.Hk, s.H);
  for (int64_t t = t0; t < t1; ++t) {
    const scalar_t* r0 = kplanes + t * plane + ty.i0 * s.Wk;
    const scalar_t* r1 = kplanes + t * plane + ty.i1 * s.Wk;
    for (int64_t xk = 0; xk < s.Wk; ++xk) {
      row_buf[xk] = (1 - ty.l1) * static_cast<opmath_t>(r0[xk]) +
                    ty.l1 * static_cast<opmath_t>(r1[xk]);
    }
    opmath_t* out = dst + (t - t0) * s.W;
    for (int64_t x = 0; x < s.W; ++x) out[x] = lerp_tap(row_buf.data(), xt[x]);
  }
}

// Valid output columns [lo, hi) for horizontal tap offset dx (zero padding).
inline std::pair<int64_t, int64_t> valid_columns(int64_t dx, int64_t W) {
  return {std::max<int64_t>(0, -dx), std::min<int64_t>(W, W - dx)};
}

int64_t grain(const Shape& s) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, s.W * s.taps() * s.channels_per_group()));
}

// out[col] = sum_t w[t][col] * src[t][col] over the k*k taps, where tap t reads
// column col + shift[t] of its (unshifted) rows: terms outside [0, W) are zero.
// Interior columns keep the sum in registers across all taps (two loads per
// multiply-add instead of four memory operations); KS > 0 unrolls the taps.
template <int KS, typename scalar_t>
void sum_of_taps(const opmath<scalar_t>* const* w, const scalar_t* const* src,
                 const int64_t* shift, int64_t k, int64_t W, scalar_t* __restrict__ out) {
  using opmath_t = opmath<scalar_t>;
  const int64_t taps = KS > 0 ? KS * KS : k * k, r = (KS > 0 ? KS : k) / 2;
  auto border = [&](int64_t col) {
    opmath_t acc = 0;
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t at = col + shift[t];
      if (at >= 0 && at < W) acc += w[t][col] * static_cast<opmath_t>(src[t][col]);
    }
    out[col] = acc;
  };
  const int64_t lo = std::min(r, W), hi = std::max(lo, W - r);
  for (int64_t col = 0; col < lo; ++col) border(col);
  if constexpr (KS > 0) {
    // Local copies of the row pointers: the vectoriser gives up when it has to
    // reload them through the caller's arrays.
    const opmath_t* wl[KS * KS];
    const scalar_t* sl[KS * KS];
    for (int t = 0; t < KS * KS; ++t) wl[t] = w[t], sl[t] = src[t];
    for (int64_t col = lo; col < hi; ++col) {
      opmath_t acc = 0;
#pragma GCC unroll 25
      for (int t = 0; t < KS * KS; ++t) acc += wl[t][col] * static_cast<opmath_t>(sl[t][col]);
      out[col] = acc;
    }
  } else {
    for (int64_t col = lo; col < hi; ++col) {
      opmath_t acc = 0;
      for (int64_t t = 0; t < taps; ++t) acc += w[t][col] * static_cast<opmath_t>(src[t][col]);
      out[col] = acc;
    }
  }
  for (int64_t col = hi; col < W; ++col) border(col);
}

template <typename scalar_t>
void sum_of_taps_any(const opmath<scalar_t>* const* w, const scalar_t* const* src,
                     const int64_t* shift, int64_t k, int64_t W, scalar_t* out) {
  if (k == 3) return sum_of_taps<3>(w, src, shift, k, W, out);
  if (k == 5) return sum_of_taps<5>(w, src, shift, k, W, out);
  sum_of_taps<0>(w, src, shift, k, W, out);
}

// Weight rows of (sample, group) bg at output row y, taps [t0, t1): pointers
// straight into a full-resolution fp32/fp64 kernel map, else interpolated or
// converted into `buf` (laid out [t - t0][x]).
template <typename scalar_t>
void weight_row_pointers(const scalar_t* kplanes, int64_t y, int64_t t0, int64_t t1,
                         const Shape& s, const std::vector<ResizeTap<opmath<scalar_t>>>& xt,
                         std::vector<opmath<scalar_t>>& row_buf, opmath<scalar_t>* buf,
                         const opmath<scalar_t>** ptrs) {
  if constexpr (std::is_same_v<scalar_t, opmath<scalar_t>>) {
    if (s.full_resolution()) {
      for (int64_t t = t0; t < t1; ++t) ptrs[t] = kplanes + (t * s.H + y) * s.W;
      return;
    }
  }
  weight_rows(kplanes, y, t0, t1, s, xt, row_buf, buf);
  for (int64_t t = t0; t < t1; ++t) ptrs[t] = buf + (t - t0) * s.W;
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, const scalar_t* kernels, scalar_t* out, const Shape& s) {
  using opmath_t = opmath<scalar_t>;
  const int64_t k = s.k, r = k / 2, taps = s.taps(), cpg = s.channels_per_group();
  const auto xt = x_taps<opmath_t>(s);
  std::vector<int64_t> shift(taps);
  for (int64_t t = 0; t < taps; ++t) shift[t] = t % k - r;
  const std::vector<scalar_t> zeros(s.W + 2 * r, scalar_t(0));  // stands in for rows outside the map
  at::parallel_for(0, s.B * s.G * s.H, grain(s), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> buf(taps * s.W), row_buf(s.Wk);
    std::vector<const opmath_t*> w(taps);
    std::vector<const scalar_t*> src(taps);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y = task % s.H, bg = task / s.H, b = bg / s.G, g = bg % s.G;
      weight_row_pointers(kernels + bg * taps * s.Hk * s.Wk, y, 0, taps, s, xt, row_buf, buf.data(), w.data());
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const scalar_t* plane = x + (b * s.C + c) * s.H * s.W;
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t yy = y + t / k - r;
          src[t] = (yy >= 0 && yy < s.H ? plane + yy * s.W : zeros.data() + r) + shift[t];
        }
        sum_of_taps_any(w.data(), src.data(), shift.data(), k, s.W, out + ((b * s.C + c) * s.H + y) * s.W);
      }
    }
  });
}

// grad_x[q] = sum_t W_t(q - d_t) * grad_out(q - d_t): a gather, one task per input row.
template <typename scalar_t>
void grad_input_kernel(const scalar_t* grad_out, const scalar_t* kernels, scalar_t* grad_x,
                       const Shape& s) {
  using opmath_t = opmath<scalar_t>;
  const int64_t k = s.k, r = k / 2, taps = s.taps(), cpg = s.channels_per_group();
  const auto xt = x_taps<opmath_t>(s);
  std::vector<int64_t> shift(taps);
  for (int64_t t = 0; t < taps; ++t) shift[t] = r - t % k;  // input column q feeds output q - dx
  const std::vector<scalar_t> zeros(s.W + 2 * r, scalar_t(0));
  const std::vector<opmath_t> zero_weights(s.W + 2 * r, opmath_t(0));
  at::parallel_for(0, s.B * s.G * s.H, grain(s), [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> buf(taps * s.W), row_buf(s.Wk);
    std::vector<const opmath_t*> w(taps);
    std::vector<const scalar_t*> src(taps);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t y = task % s.H, bg = task / s.H, b = bg / s.G, g = bg % s.G;
      const scalar_t* kplanes = kernels + bg * taps * s.Hk * s.Wk;
      for (int64_t ky = 0; ky < k; ++ky) {  // output row py read input row y through tap row ky
        const int64_t py = y - (ky - r);
        if (py >= 0 && py < s.H) {
          weight_row_pointers(kplanes, py, ky * k, ky * k + k, s, xt, row_buf, buf.data() + ky * k * s.W,
                              w.data());
        } else {
          for (int64_t kx = 0; kx < k; ++kx) w[ky * k + kx] = zero_weights.data() + r;
        }
      }
      for (int64_t t = 0; t < taps; ++t) w[t] += shift[t];
      for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
        const scalar_t* plane = grad_out + (b * s.C + c) * s.H * s.W;
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t py = y - (t / k - r);
          src[t] = (py >= 0 && py < s.H ? plane + py * s.W : zeros.data() + r) + shift[t];
        }
        sum_of_taps_any(w.data(), src.data(), shift.data(), k, s.W, grad_x + ((b * s.C + c) * s.H + y) * s.W);
      }
    }
  });
}

// dst[t * W + x] = sum over the group's channels of grad_out(y, x) * x(y + dy_t, x + dx_t).
template <typename scalar_t>
void full_resolution_kernel_grad_row(const scalar_t* grad_out, const scalar_t* x, int64_t b,
                                     int64_t g, int64_t y, const Shape& s,
                                     opmath<scalar_t>* dst) {
  using opmath_t = opmath<scalar_t>;
  const int64_t k = s.k, r = k / 2, cpg = s.channels_per_group();
  std::fill(dst, dst + s.taps() * s.W, opmath_t(0));
  for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
    const int64_t plane = (b * s.C + c) * s.H * s.W;
    const scalar_t* g_row = grad_out + plane + y * s.W;
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t yy = y + ky - r;
      if (yy < 0 || yy >= s.H) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t dx = kx - r;
        const auto [lo, hi] = valid_columns(dx, s.W);
        const scalar_t* src = x + plane + yy * s.W + dx;
        opmath_t* out = dst + (ky * k + kx) * s.W;
        for (int64_t col = lo; col < hi; ++col) {
          out[col] += static_cast<opmath_t>(g_row[col]) * static_cast<opmath_t>(src[col]);
        }
      }
    }
  }
}

template <typename scalar_t>
void grad_kernels_kernel(const scalar_t* grad_out, const scalar_t* x, scalar_t* grad_k,
                         const Shape& s) {
  using opmath_t = opmath<scalar_t>;
  const int64_t taps = s.taps();
  if (s.full_resolution()) {
    at::parallel_for(0, s.B * s.G * s.H, grain(s), [&](int64_t begin, int64_t end) {
      std::vector<opmath_t> rows(taps * s.W);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t y = task % s.H, bg = task / s.H;
        full_resolution_kernel_grad_row(grad_out, x, bg / s.G, bg % s.G, y, s, rows.data());
        for (int64_t t = 0; t < taps; ++t) {
          std::copy(rows.begin() + t * s.W, rows.begin() + (t + 1) * s.W,
                    grad_k + ((bg * taps + t) * s.H + y) * s.W);
        }
      }
    });
    return;
  }
  // Low resolution: the adjoint of the bilinear upsampling scatters each row
  // into two low-resolution rows. One task owns all kernel planes of one
  // (sample, group), so the scatter needs no atomics.
  const auto xt = x_taps<opmath_t>(s);
  at::parallel_for(0, s.B * s.G, 1, [&](int64_t begin, int64_t end) {
    std::vector<opmath_t> rows(taps * s.W), row_buf(s.Wk), acc(taps * s.Hk * s.Wk);
    for (int64_t bg = begin; bg < end; ++bg) {
      std::fill(acc.begin(), acc.end(), opmath_t(0));
      for (int64_t y = 0; y < s.H; ++y) {
        full_resolution_kernel_grad_row(grad_out, x, bg / s.G, bg % s.G, y, s, rows.data());
        const ResizeTap<opmath_t> ty = resize_tap<opmath_t>(y, s.Hk, s.H);
        for (int64_t t = 0; t < taps; ++t) {
          std::fill(row_buf.begin(), row_buf.end(), opmath_t(0));
          const opmath_t* row = rows.data() + t * s.W;
          for (int64_t col = 0; col < s.W; ++col) {
            row_buf[xt[col].i0] += (1 - xt[col].l1) * row[col];
            row_buf[xt[col].i1] += xt[col].l1 * row[col];
          }
          opmath_t* a0 = acc.data() + (t * s.Hk + ty.i0) * s.Wk;
          opmath_t* a1 = acc.data() + (t * s.Hk + ty.i1) * s.Wk;
          for (int64_t xk = 0; xk < s.Wk; ++xk) {
            a0[xk] += (1 - ty.l1) * row_buf[xk];
            a1[xk] += ty.l1 * row_buf[xk];
          }
        }
      }
      std::copy(acc.begin(), acc.end(), grad_k + bg * taps * s.Hk * s.Wk);
    }
  });
}

at::Tensor forward_cpu(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t kernel_size) {
  const Shape s = check_inputs(x_in, kernels_in, kernel_size, "pixel_dynamic_filter");
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor out = empty_output(x.sizes(), x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_dynamic_filter_cpu", [&] {
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), kernels.const_data_ptr<scalar_t>(),
                             out.mutable_data_ptr<scalar_t>(), s);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                const at::Tensor& kernels_in, int64_t kernel_size) {
  const Shape s = check_inputs(x_in, kernels_in, kernel_size, "pixel_dynamic_filter_backward");
  check_same_device_dtype(grad_out_in, x_in, "pixel_dynamic_filter_backward: grad_out", "x");
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes(), "pixel_dynamic_filter_backward: grad_out: expected shape ",
              x_in.sizes(), ", got ", grad_out_in.sizes());
  const at::Tensor grad_out = grad_out_in.contiguous(), x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor grad_x = empty_output(x.sizes(), x.options());
  at::Tensor grad_k = empty_output(kernels.sizes(), kernels.options());
  if (x.numel() == 0) return {grad_x, grad_k.zero_()};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_dynamic_filter_backward_cpu", [&] {
    grad_input_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(), kernels.const_data_ptr<scalar_t>(),
                                grad_x.mutable_data_ptr<scalar_t>(), s);
    grad_kernels_kernel<scalar_t>(grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                  grad_k.mutable_data_ptr<scalar_t>(), s);
  });
  return {grad_x, grad_k};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CPU, m) {
  m.impl("pixel_dynamic_filter", &forward_cpu);
  m.impl("pixel_dynamic_filter_backward", &backward_cpu);
}

}  // namespace pixel_dynamic_filter
}  // namespace deblurlayers
