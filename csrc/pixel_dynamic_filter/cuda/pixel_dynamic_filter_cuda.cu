// Per-pixel, per-channel k x k dynamic filtering on CUDA. One thread per
// output (forward), per input element (input gradient: a gather, so
// deterministic) and per full-resolution kernel value (kernel gradient; with
// a low-resolution kernel map it is scattered to the four source values with
// atomics, which is flagged as nondeterministic).
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../pixel_dynamic_filter.h"
#include "deblurlayers/bilinear.h"
#include "deblurlayers/cuda_launch.cuh"

namespace deblurlayers {
namespace pixel_dynamic_filter {
namespace {

// Weight of tap plane `kplane` (Hk x Wk) at full-resolution pixel (y, x).
template <typename scalar_t, typename opmath_t = at::opmath_type<scalar_t>>
__device__ __forceinline__ opmath_t weight_at(const scalar_t* kplane, int64_t y,
                                              int64_t x, const Shape& s) {
  if (s.Hk == s.H && s.Wk == s.W) return static_cast<opmath_t>(kplane[y * s.W + x]);
  const ResizeTap<opmath_t> ty = resize_tap<opmath_t>(y, s.Hk, s.H);
  const ResizeTap<opmath_t> tx = resize_tap<opmath_t>(x, s.Wk, s.W);
  return (1 - ty.l1) * lerp_tap(kplane + ty.i0 * s.Wk, tx) +
         ty.l1 * lerp_tap(kplane + ty.i1 * s.Wk, tx);
}

// Element idx of a (B, C, H, W) map: its column, row, (b, c) plane, and the
// offset of its kernel group's k*k tap planes in `kernels`.
struct PixelIndex {
  int64_t col, y, plane, kernel_offset;
};

__device__ __forceinline__ PixelIndex pixel_index(int64_t idx, const Shape& s) {
  const int64_t col = idx % s.W, y = (idx / s.W) % s.H, bc = idx / (s.W * s.H);
  const int64_t b = bc / s.C, g = (bc % s.C) / (s.C / s.G);
  return {col, y, bc, (b * s.G + g) * s.k * s.k * s.Hk * s.Wk};
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x,
                               const scalar_t* __restrict__ kernels,
                               scalar_t* __restrict__ out, Shape s, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t k = s.k, r = k / 2, taps = k * k;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {
    const PixelIndex at = pixel_index(idx, s);
    const int64_t col = at.col, y = at.y;
    const scalar_t* kplanes = kernels + at.kernel_offset;
    const scalar_t* plane = x + at.plane * s.H * s.W;
    opmath_t acc = 0;
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t yy = y + t / k - r, xx = col + t % k - r;
      if (yy < 0 || yy >= s.H || xx < 0 || xx >= s.W) continue;
      acc += weight_at(kplanes + t * s.Hk * s.Wk, y, col, s) *
             static_cast<opmath_t>(plane[yy * s.W + xx]);
    }
    out[idx] = acc;
  }
}

template <typename scalar_t>
__global__ void grad_input_kernel(const scalar_t* __restrict__ grad_out,
                                  const scalar_t* __restrict__ kernels,
                                  scalar_t* __restrict__ grad_x, Shape s, int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t k = s.k, r = k / 2, taps = k * k;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {
    const PixelIndex at = pixel_index(idx, s);
    const int64_t col = at.col, y = at.y;
    const scalar_t* kplanes = kernels + at.kernel_offset;
    const scalar_t* plane = grad_out + at.plane * s.H * s.W;
    opmath_t acc = 0;
    for (int64_t t = 0; t < taps; ++t) {  // output pixel p = q - d_t read this input through tap t
      const int64_t py = y - (t / k - r), px = col - (t % k - r);
      if (py < 0 || py >= s.H || px < 0 || px >= s.W) continue;
      acc += weight_at(kplanes + t * s.Hk * s.Wk, py, px, s) *
             static_cast<opmath_t>(plane[py * s.W + px]);
    }
    grad_x[idx] = acc;
  }
}

// Gradient of the full-resolution weight of tap t at (y, x) for (b, g):
// sum over the group's channels of grad_out(y, x) * x(y + dy, x + dx).
template <typename scalar_t, typename opmath_t = at::opmath_type<scalar_t>>
__device__ __forceinline__ opmath_t full_weight_grad(const scalar_t* grad_out,
                                                     const scalar_t* x, int64_t b,
                                                     int64_t g, int64_t t, int64_t y,
                                                     int64_t col, const Shape& s) {
  const int64_t k = s.k, r = k / 2, cpg = s.C / s.G;
  const int64_t yy = y + t / k - r, xx = col + t % k - r;
  if (yy < 0 || yy >= s.H || xx < 0 || xx >= s.W) return 0;
  opmath_t acc = 0;
  for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
    const int64_t plane = (b * s.C + c) * s.H * s.W;
    acc += static_cast<opmath_t>(grad_out[plane + y * s.W + col]) *
           static_cast<opmath_t>(x[plane + yy * s.W + xx]);
  }
  return acc;
}

template <typename scalar_t>
__global__ void grad_kernels_full_kernel(const scalar_t* __restrict__ grad_out,
                                         const scalar_t* __restrict__ x,
                                         scalar_t* __restrict__ grad_k, Shape s, int64_t n) {
  const int64_t taps = s.k * s.k;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {  // idx over (b, g, t, y, x) = grad_k's layout
    const int64_t col = idx % s.W, y = (idx / s.W) % s.H, bgt = idx / (s.W * s.H);
    const int64_t t = bgt % taps, bg = bgt / taps;
    grad_k[idx] = full_weight_grad(grad_out, x, bg / s.G, bg % s.G, t, y, col, s);
  }
}

template <typename scalar_t, typename opmath_t>
__global__ void grad_kernels_low_res_kernel(const scalar_t* __restrict__ grad_out,
                                            const scalar_t* __restrict__ x,
                                            opmath_t* __restrict__ grad_k, Shape s,
                                            int64_t n) {
  const int64_t taps = s.k * s.k;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {  // idx over (b, g, t, y, x) at full resolution
    const int64_t col = idx % s.W, y = (idx / s.W) % s.H, bgt = idx / (s.W * s.H);
    const int64_t t = bgt % taps, bg = bgt / taps;
    const opmath_t v = full_weight_grad(grad_out, x, bg / s.G, bg % s.G, t, y, col, s);
    if (v == 0) continue;
    const ResizeTap<opmath_t> ty = resize_tap<opmath_t>(y, s.Hk, s.H);
    const ResizeTap<opmath_t> tx = resize_tap<opmath_t>(col, s.Wk, s.W);
    opmath_t* plane = grad_k + bgt * s.Hk * s.Wk;
    gpuAtomicAdd(plane + ty.i0 * s.Wk + tx.i0, (1 - ty.l1) * (1 - tx.l1) * v);
    gpuAtomicAdd(plane + ty.i0 * s.Wk + tx.i1, (1 - ty.l1) * tx.l1 * v);
    gpuAtomicAdd(plane + ty.i1 * s.Wk + tx.i0, ty.l1 * (1 - tx.l1) * v);
    gpuAtomicAdd(plane + ty.i1 * s.Wk + tx.i1, ty.l1 * tx.l1 * v);
  }
}

at::Tensor forward_cuda(const at::Tensor& x_in, const at::Tensor& kernels_in, int64_t kernel_size) {
  const Shape s = check_inputs(x_in, kernels_in, kernel_size, "pixel_dynamic_filter");
  c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor out = at::empty(x.sizes(), x.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_dynamic_filter_cuda", [&] {
    forward_kernel<scalar_t><<<grid_blocks(n), kThreadsPerBlock, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), kernels.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), s, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                 const at::Tensor& kernels_in, int64_t kernel_size) {
  const Shape s = check_inputs(x_in, kernels_in, kernel_size, "pixel_dynamic_filter_backward");
  check_same_device_dtype(grad_out_in, x_in, "pixel_dynamic_filter_backward: grad_out", "x");
  TORCH_CHECK(grad_out_in.sizes() == x_in.sizes(), "pixel_dynamic_filter_backward: grad_out: expected shape ",
              x_in.sizes(), ", got ", grad_out_in.sizes());
  c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor grad_out = grad_out_in.contiguous(), x = x_in.contiguous(), kernels = kernels_in.contiguous();
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return {grad_x, at::zeros(kernels.sizes(), kernels.options())};
  const auto stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor grad_k;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "pixel_dynamic_filter_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const int64_t n = x.numel();
    grad_input_kernel<scalar_t><<<grid_blocks(n), kThreadsPerBlock, 0, stream>>>(
        grad_out.const_data_ptr<scalar_t>(), kernels.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(),
        s, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const int64_t m = s.B * s.G * s.taps() * s.H * s.W;  // full-resolution kernel values
    if (s.full_resolution()) {
      grad_k = at::empty(kernels.sizes(), kernels.options());
      grad_kernels_full_kernel<scalar_t><<<grid_blocks(m), kThreadsPerBlock, 0, stream>>>(
          grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), grad_k.mutable_data_ptr<scalar_t>(), s,
          m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      at::globalContext().alertNotDeterministic("deblurlayers::pixel_dynamic_filter_backward (low-resolution kernels, CUDA)");
      at::Tensor acc = at::zeros(kernels.sizes(), kernels.options().dtype(c10::CppTypeToScalarType<opmath_t>::value));
      grad_kernels_low_res_kernel<scalar_t, opmath_t><<<grid_blocks(m), kThreadsPerBlock, 0, stream>>>(
          grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), acc.mutable_data_ptr<opmath_t>(), s, m);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      grad_k = acc.to(kernels.scalar_type());
    }
  });
  return {grad_x, grad_k};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CUDA, m) {
  m.impl("pixel_dynamic_filter", &forward_cuda);
  m.impl("pixel_dynamic_filter_backward", &backward_cuda);
}

}  // namespace pixel_dynamic_filter
}  // namespace deblurlayers
