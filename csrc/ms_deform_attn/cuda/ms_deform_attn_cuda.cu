// Multi-scale deformable attention on CUDA.
//
// Forward: one thread per output element (n, q, m, d), as Deformable-DETR:
// consecutive threads read consecutive channels of each tap.
// Backward: one warp per (n, q, m). Lanes stride over the D channels; the
// per-sample dot products for the location and weight gradients are reduced
// with warp shuffles (no shared memory, any D), and the value gradient is
// scattered with atomics into an fp32 (fp64 for double) buffer, so it is
// nondeterministic and flagged as such.
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

#include "../ms_deform_attn.h"
#include "deblurlayers/bilinear.h"
#include "deblurlayers/cuda_launch.cuh"

namespace deblurlayers {
namespace ms_deform_attn {
namespace {

constexpr int kWarp = 32;

template <typename opmath_t, typename scalar_t>
__device__ __forceinline__ ZeroPadBilinear<opmath_t> taps_at(const scalar_t* loc, int64_t H, int64_t W) {
  return zero_pad_bilinear<opmath_t>(static_cast<opmath_t>(loc[0]) * W - opmath_t(0.5),
                                     static_cast<opmath_t>(loc[1]) * H - opmath_t(0.5), H, W);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ hw,
                               const int64_t* __restrict__ start, const scalar_t* __restrict__ loc,
                               const scalar_t* __restrict__ attn, scalar_t* __restrict__ out, Shape s,
                               int64_t n) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t row = s.M * s.D;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, n) {
    const int64_t d = idx % s.D, m = (idx / s.D) % s.M, nq = idx / row, b = nq / s.Lq;
    opmath_t acc = 0, nan = 0;  // nan: see ZeroPadBilinear::nan_x
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = hw[2 * l], W = hw[2 * l + 1];
      const scalar_t* v = value + (b * s.S + start[l]) * row + m * s.D + d;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t i = s.sample_index(nq, m, l, p);
        const auto taps = taps_at<opmath_t>(loc + 2 * i, H, W);
        nan += taps.nan_x + taps.nan_y;
        if (!taps.inside) continue;
        const opmath_t a = static_cast<opmath_t>(attn[i]);
#pragma unroll
        for (int t = 0; t < 4; ++t) {
          if (taps.valid[t]) acc += a * taps.weight[t] * static_cast<opmath_t>(v[taps.offset[t] * row]);
        }
      }
    }
    out[idx] = static_cast<scalar_t>(acc + nan);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ hw, const int64_t* __restrict__ start,
                                const scalar_t* __restrict__ loc, const scalar_t* __restrict__ attn,
                                at::opmath_type<scalar_t>* __restrict__ grad_value, scalar_t* __restrict__ grad_loc,
                                scalar_t* __restrict__ grad_attn, Shape s, int64_t n_warps) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t row = s.M * s.D;
  const int lane = threadIdx.x % kWarp;
  const int64_t first = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  // The loop bound is uniform across a warp, so every lane reaches the shuffles.
  for (int64_t w = first; w < n_warps; w += stride) {
    const int64_t m = w % s.M, nq = w / s.M, b = nq / s.Lq;
    const scalar_t* go = grad_out + nq * row + m * s.D;
    for (int64_t l = 0; l < s.L; ++l) {
      const int64_t H = hw[2 * l], W = hw[2 * l + 1];
      const int64_t level_offset = (b * s.S + start[l]) * row + m * s.D;
      for (int64_t p = 0; p < s.P; ++p) {
        const int64_t i = s.sample_index(nq, m, l, p);
        const auto taps = taps_at<opmath_t>(loc + 2 * i, H, W);
        opmath_t d_attn = 0, d_x = 0, d_y = 0;
        const opmath_t a = static_cast<opmath_t>(attn[i]);
        if (taps.inside) {
          for (int64_t d = lane; d < s.D; d += kWarp) {
            const opmath_t g = static_cast<opmath_t>(go[d]);
#pragma unroll
            for (int t = 0; t < 4; ++t) {
              if (!taps.valid[t]) continue;
              const int64_t off = level_offset + taps.offset[t] * row + d;
              const opmath_t vg = static_cast<opmath_t>(value[off]) * g;
              d_attn += taps.weight[t] * vg;
              d_x += taps.dweight_dx[t] * vg;
              d_y += taps.dweight_dy[t] * vg;
              gpuAtomicAdd(grad_value + off, a * taps.weight[t] * g);
            }
          }
        }
        d_attn = warp_sum(d_attn);
        d_x = warp_sum(d_x);
        d_y = warp_sum(d_y);
        if (lane == 0) {
          grad_attn[i] = static_cast<scalar_t>(d_attn + taps.nan_x + taps.nan_y);
          grad_loc[2 * i] = static_cast<scalar_t>(d_x * a * W + taps.nan_y);
          grad_loc[2 * i + 1] = static_cast<scalar_t>(d_y * a * H + taps.nan_x);
        }
      }
    }
  }
}

at::Tensor forward_cuda(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                        const at::Tensor& level_start_index_in, const at::Tensor& sampling_locations_in,
                        const at::Tensor& attention_weights_in) {
  const Shape s = check_inputs(value_in, spatial_shapes_in, level_start_index_in, sampling_locations_in,
                               attention_weights_in, "ms_deform_attn");
  c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor value = value_in.contiguous(), shapes = spatial_shapes_in.contiguous(),
                   starts = level_start_index_in.contiguous(), loc = sampling_locations_in.contiguous(),
                   attn = attention_weights_in.contiguous();
  at::Tensor out = at::empty({s.N, s.Lq, s.M * s.D}, value.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
    forward_kernel<scalar_t><<<grid_blocks(n), kThreadsPerBlock, 0, stream>>>(
        value.const_data_ptr<scalar_t>(), shapes.const_data_ptr<int64_t>(), starts.const_data_ptr<int64_t>(),
        loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), s, n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
    const at::Tensor& level_start_index_in, const at::Tensor& sampling_locations_in,
    const at::Tensor& attention_weights_in) {
  const Shape s = check_inputs(value_in, spatial_shapes_in, level_start_index_in, sampling_locations_in,
                               attention_weights_in, "ms_deform_attn_backward");
  check_grad_out(grad_out_in, value_in, s);
  c10::cuda::CUDAGuard guard(value_in.device());
  const at::Tensor grad_out = grad_out_in.contiguous(), value = value_in.contiguous(),
                   shapes = spatial_shapes_in.contiguous(), starts = level_start_index_in.contiguous(),
                   loc = sampling_locations_in.contiguous(), attn = attention_weights_in.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_loc = at::empty(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::empty(attn.sizes(), attn.options());
  const int64_t n_warps = s.N * s.Lq * s.M;
  if (n_warps > 0 && s.L * s.P > 0) {
    at::globalContext().alertNotDeterministic("deblurlayers::ms_deform_attn_backward (CUDA)");
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
      backward_kernel<scalar_t><<<grid_blocks(n_warps * kWarp), kThreadsPerBlock, 0, stream>>>(
          grad_out.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(), shapes.const_data_ptr<int64_t>(),
          starts.const_data_ptr<int64_t>(), loc.const_data_ptr<scalar_t>(), attn.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<at::opmath_type<scalar_t>>(), grad_loc.mutable_data_ptr<scalar_t>(),
          grad_attn.mutable_data_ptr<scalar_t>(), s, n_warps);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CUDA, m) {
  m.impl("ms_deform_attn", &forward_cuda);
  m.impl("ms_deform_attn_backward", &backward_cuda);
}

}  // namespace ms_deform_attn
}  // namespace deblurlayers
