// Haar DWT/IDWT on the CPU: one streaming pass, parallel over output rows.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../haar.h"
#include "deblurlayers/alloc.h"
#include "deblurlayers/haar.h"

namespace deblurlayers {
namespace haar {
namespace {

// __restrict__ row kernels: without the no-alias promise the compiler will
// not vectorise the (de)interleaving loads and stores.
template <typename scalar_t>
void dwt_row(const scalar_t* __restrict__ top, const scalar_t* __restrict__ bottom,
             scalar_t* __restrict__ o0, scalar_t* __restrict__ o1,
             scalar_t* __restrict__ o2, scalar_t* __restrict__ o3, int64_t w,
             at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t j = 0; j < w; ++j) {
    opmath_t v0, v1, v2, v3;
    haar_butterfly<opmath_t>(top[2 * j], top[2 * j + 1], bottom[2 * j],
                             bottom[2 * j + 1], scale, v0, v1, v2, v3);
    o0[j] = v0; o1[j] = v1; o2[j] = v2; o3[j] = v3;
  }
}

template <typename scalar_t>
void idwt_row(const scalar_t* __restrict__ i0, const scalar_t* __restrict__ i1,
              const scalar_t* __restrict__ i2, const scalar_t* __restrict__ i3,
              scalar_t* __restrict__ top, scalar_t* __restrict__ bottom,
              int64_t w, at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t j = 0; j < w; ++j) {
    opmath_t a, b, c, d;
    haar_butterfly<opmath_t>(i0[j], i1[j], i2[j], i3[j], scale, a, b, c, d);
    top[2 * j] = a; top[2 * j + 1] = b;
    bottom[2 * j] = c; bottom[2 * j + 1] = d;
  }
}

// Channels-last: the four taps of one output pixel are runs of C contiguous
// channels; highs[k*C + c] of a pixel lie 3C apart from the next pixel's.
template <typename scalar_t>
void dwt_pixel_cl(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                  const scalar_t* __restrict__ c, const scalar_t* __restrict__ d,
                  scalar_t* __restrict__ ll, scalar_t* __restrict__ highs,
                  int64_t C, at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t ch = 0; ch < C; ++ch) {
    opmath_t v0, v1, v2, v3;
    haar_butterfly<opmath_t>(a[ch], b[ch], c[ch], d[ch], scale, v0, v1, v2, v3);
    ll[ch] = v0; highs[ch] = v1; highs[C + ch] = v2; highs[2 * C + ch] = v3;
  }
}

template <typename scalar_t>
void idwt_pixel_cl(const scalar_t* __restrict__ ll, const scalar_t* __restrict__ highs,
                   scalar_t* __restrict__ top, scalar_t* __restrict__ bottom,
                   int64_t C, at::opmath_type<scalar_t> scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  for (int64_t ch = 0; ch < C; ++ch) {
    opmath_t a, b, c, d;
    haar_butterfly<opmath_t>(ll[ch], highs[ch], highs[C + ch], highs[2 * C + ch], scale, a, b, c, d);
    top[ch] = a; top[C + ch] = b; bottom[ch] = c; bottom[C + ch] = d;
  }
}

// At least ~16k elements per task, so small maps do not pay for threading.
int64_t row_grain(int64_t row_elems) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elems));
}

// (B, H, W, C) in memory: rows of output pixels, each a run of C channels.
std::tuple<at::Tensor, at::Tensor> dwt_cpu_channels_last(const at::Tensor& x, double scale) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = H / 2, w = W / 2;
  const auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  at::Tensor ll = empty_output({B, C, h, w}, options);
  at::Tensor highs = empty_output({B, 3 * C, h, w}, options);
  if (x.numel() == 0) return {ll, highs};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "haar_dwt2d_cpu_channels_last", [&] {
        const scalar_t* src = x.const_data_ptr<scalar_t>();
        scalar_t* ll_ptr = ll.mutable_data_ptr<scalar_t>();
        scalar_t* hi_ptr = highs.mutable_data_ptr<scalar_t>();
        const auto s = static_cast<at::opmath_type<scalar_t>>(scale);
        at::parallel_for(0, B * h, row_grain(4 * w * C), [&](int64_t r0, int64_t r1) {
          for (int64_t row = r0; row < r1; ++row) {
            const int64_t b = row / h, i = row % h;
            const scalar_t* top = src + (b * H + 2 * i) * W * C;
            const scalar_t* bottom = top + W * C;
            for (int64_t j = 0; j < w; ++j) {
              const int64_t pixel = row * w + j;
              dwt_pixel_cl<scalar_t>(top + 2 * j * C, top + (2 * j + 1) * C, bottom + 2 * j * C,
                                     bottom + (2 * j + 1) * C, ll_ptr + pixel * C, hi_ptr + pixel * 3 * C, C, s);
            }
          }
        });
      });
  return {ll, highs};
}

at::Tensor idwt_cpu_channels_last(const at::Tensor& ll_in, const at::Tensor& highs_in, double scale) {
  const at::Tensor ll = ll_in.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor highs = highs_in.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t B = ll.size(0), C = ll.size(1), h = ll.size(2), w = ll.size(3);
  const int64_t W = 2 * w;
  at::Tensor x = empty_output({B, C, 2 * h, W}, ll.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (x.numel() == 0) return x;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ll.scalar_type(), "haar_idwt2d_cpu_channels_last", [&] {
        const scalar_t* ll_ptr = ll.const_data_ptr<scalar_t>();
        const scalar_t* hi_ptr = highs.const_data_ptr<scalar_t>();
        scalar_t* dst = x.mutable_data_ptr<scalar_t>();
        const auto s = static_cast<at::opmath_type<scalar_t>>(scale);
        at::parallel_for(0, B * h, row_grain(4 * w * C), [&](int64_t r0, int64_t r1) {
          for (int64_t row = r0; row < r1; ++row) {
            const int64_t b = row / h, i = row % h;
            scalar_t* top = dst + (b * 2 * h + 2 * i) * W * C;
            scalar_t* bottom = top + W * C;
            for (int64_t j = 0; j < w; ++j) {
              const int64_t pixel = row * w + j;
              idwt_pixel_cl<scalar_t>(ll_ptr + pixel * C, hi_ptr + pixel * 3 * C, top + 2 * j * C,
                                      bottom + 2 * j * C, C, s);
            }
          }
        });
      });
  return x;
}

std::tuple<at::Tensor, at::Tensor> dwt_cpu(const at::Tensor& x_in,
                                           double scale) {
  check_dwt_input(x_in);
  if (output_layout(x_in) == at::MemoryFormat::ChannelsLast) return dwt_cpu_channels_last(x_in, scale);
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t h = H / 2, w = W / 2;
  at::Tensor ll = empty_output({B, C, h, w}, x.options());
  at::Tensor highs = empty_output({B, 3 * C, h, w}, x.options());
  if (x.numel() == 0) return {ll, highs};

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "haar_dwt2d_cpu", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const scalar_t* src = x.const_data_ptr<scalar_t>();
        scalar_t* ll_ptr = ll.mutable_data_ptr<scalar_t>();
        scalar_t* hi_ptr = highs.mutable_data_ptr<scalar_t>();
        const opmath_t s = static_cast<opmath_t>(scale);
        const int64_t band_stride = C * h * w;  // between bands of one sample
        at::parallel_for(0, B * C * h, row_grain(4 * w), [&](int64_t r0, int64_t r1) {
          for (int64_t row = r0; row < r1; ++row) {
            const int64_t plane = row / h, i = row % h;
            const int64_t b = plane / C;
            const scalar_t* top = src + plane * H * W + 2 * i * W;
            const int64_t out = plane * h * w + i * w;
            // highs[b, k*C + c] = plane + (2b + k) * C planes further on.
            scalar_t* o1 = hi_ptr + out + 2 * b * band_stride;
            dwt_row<scalar_t>(top, top + W, ll_ptr + out, o1, o1 + band_stride,
                              o1 + 2 * band_stride, w, s);
          }
        });
      });
  return {ll, highs};
}

at::Tensor idwt_cpu(const at::Tensor& ll_in, const at::Tensor& highs_in,
                    double scale) {
  check_idwt_inputs(ll_in, highs_in);
  if (output_layout(ll_in) == at::MemoryFormat::ChannelsLast) return idwt_cpu_channels_last(ll_in, highs_in, scale);
  const at::Tensor ll = ll_in.contiguous();
  const at::Tensor highs = highs_in.contiguous();
  const int64_t B = ll.size(0), C = ll.size(1), h = ll.size(2), w = ll.size(3);
  const int64_t H = 2 * h, W = 2 * w;
  at::Tensor x = empty_output({B, C, H, W}, ll.options());
  if (x.numel() == 0) return x;

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ll.scalar_type(), "haar_idwt2d_cpu", [&] {
        using opmath_t = at::opmath_type<scalar_t>;
        const scalar_t* ll_ptr = ll.const_data_ptr<scalar_t>();
        const scalar_t* hi_ptr = highs.const_data_ptr<scalar_t>();
        scalar_t* dst = x.mutable_data_ptr<scalar_t>();
        const opmath_t s = static_cast<opmath_t>(scale);
        const int64_t band_stride = C * h * w;
        at::parallel_for(0, B * C * h, row_grain(4 * w), [&](int64_t r0, int64_t r1) {
          for (int64_t row = r0; row < r1; ++row) {
            const int64_t plane = row / h, i = row % h;
            const int64_t b = plane / C;
            const int64_t in = plane * h * w + i * w;
            const scalar_t* i1 = hi_ptr + in + 2 * b * band_stride;
            scalar_t* top = dst + plane * H * W + 2 * i * W;
            idwt_row<scalar_t>(ll_ptr + in, i1, i1 + band_stride,
                               i1 + 2 * band_stride, top, top + W, w, s);
          }
        });
      });
  return x;
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CPU, m) {
  m.impl("haar_dwt2d", &dwt_cpu);
  m.impl("haar_idwt2d", &idwt_cpu);
}

}  // namespace haar
}  // namespace deblurlayers
