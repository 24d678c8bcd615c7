// Haar DWT/IDWT on CUDA: one thread per 2x2 block, grid-stride, int64 indexing.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../haar.h"
#include "deblurlayers/cuda_launch.cuh"
#include "deblurlayers/haar.h"

namespace deblurlayers {
namespace haar {
namespace {

// For 2x2 block `idx` (row-major over B*C planes of h x w blocks): the offset
// of its top-left pixel in the full-resolution map and of its first high band
// in `highs`, whose band k of sample b holds channel c at plane (3b + k)C + c.
struct BlockOffsets {
  int64_t pixel, high;
};

__device__ __forceinline__ BlockOffsets block_offsets(int64_t idx, int64_t C,
                                                      int64_t h, int64_t w) {
  const int64_t j = idx % w, i = (idx / w) % h, plane = idx / (w * h);
  return {plane * 4 * h * w + 2 * i * (2 * w) + 2 * j,
          idx + 2 * (plane / C) * C * h * w};
}

template <typename scalar_t>
__global__ void dwt_kernel(const scalar_t* __restrict__ x,
                           scalar_t* __restrict__ ll,
                           scalar_t* __restrict__ highs, int64_t n, int64_t C,
                           int64_t h, int64_t w, float scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t W = 2 * w, band_stride = C * h * w;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {
    const BlockOffsets at = block_offsets(idx, C, h, w);
    const scalar_t* top = x + at.pixel;
    opmath_t v0, v1, v2, v3;
    haar_butterfly<opmath_t>(top[0], top[1], top[W], top[W + 1], scale, v0, v1,
                             v2, v3);
    const int64_t hi = at.high;
    ll[idx] = v0;
    highs[hi] = v1;
    highs[hi + band_stride] = v2;
    highs[hi + 2 * band_stride] = v3;
  }
}

template <typename scalar_t>
__global__ void idwt_kernel(const scalar_t* __restrict__ ll,
                            const scalar_t* __restrict__ highs,
                            scalar_t* __restrict__ x, int64_t n, int64_t C,
                            int64_t h, int64_t w, float scale) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t W = 2 * w, band_stride = C * h * w;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {
    const BlockOffsets at = block_offsets(idx, C, h, w);
    const int64_t hi = at.high;
    opmath_t a, bb, c, d;
    haar_butterfly<opmath_t>(ll[idx], highs[hi], highs[hi + band_stride],
                             highs[hi + 2 * band_stride], scale, a, bb, c, d);
    scalar_t* top = x + at.pixel;
    top[0] = a;
    top[1] = bb;
    top[W] = c;
    top[W + 1] = d;
  }
}

std::tuple<at::Tensor, at::Tensor> dwt_cuda(const at::Tensor& x_in,
                                            double scale) {
  check_dwt_input(x_in);
  c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), h = x.size(2) / 2,
                w = x.size(3) / 2;
  at::Tensor ll = at::empty({B, C, h, w}, x.options());
  at::Tensor highs = at::empty({B, 3 * C, h, w}, x.options());
  const int64_t n = ll.numel();
  if (n == 0) return {ll.contiguous(output_layout(x_in)), highs.contiguous(output_layout(x_in))};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "haar_dwt2d_cuda", [&] {
        dwt_kernel<scalar_t><<<grid_blocks(n), kThreadsPerBlock, 0, stream>>>(
            x.const_data_ptr<scalar_t>(), ll.mutable_data_ptr<scalar_t>(),
            highs.mutable_data_ptr<scalar_t>(), n, C, h, w,
            static_cast<float>(scale));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  // The kernel is NCHW; a channels-last input gets channels-last outputs (the op's contract).
  const at::MemoryFormat layout = output_layout(x_in);
  return {ll.contiguous(layout), highs.contiguous(layout)};
}

at::Tensor idwt_cuda(const at::Tensor& ll_in, const at::Tensor& highs_in,
                     double scale) {
  check_idwt_inputs(ll_in, highs_in);
  c10::cuda::CUDAGuard guard(ll_in.device());
  const at::Tensor ll = ll_in.contiguous();
  const at::Tensor highs = highs_in.contiguous();
  const int64_t B = ll.size(0), C = ll.size(1), h = ll.size(2), w = ll.size(3);
  at::Tensor x = at::empty({B, C, 2 * h, 2 * w}, ll.options());
  const int64_t n = ll.numel();
  if (n == 0) return x.contiguous(output_layout(ll_in));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, ll.scalar_type(), "haar_idwt2d_cuda", [&] {
        idwt_kernel<scalar_t><<<grid_blocks(n), kThreadsPerBlock, 0, stream>>>(
            ll.const_data_ptr<scalar_t>(), highs.const_data_ptr<scalar_t>(),
            x.mutable_data_ptr<scalar_t>(), n, C, h, w,
            static_cast<float>(scale));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return x.contiguous(output_layout(ll_in));
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CUDA, m) {
  m.impl("haar_dwt2d", &dwt_cuda);
  m.impl("haar_idwt2d", &idwt_cuda);
}

}  // namespace haar
}  // namespace deblurlayers
