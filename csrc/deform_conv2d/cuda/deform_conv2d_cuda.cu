// Modulated deformable convolution (DCNv2) on CUDA.
//
// Same chunked scheme as the CPU kernel, so memory stays bounded: per chunk of
// output pixels, one thread per (input channel, tap, pixel) writes the masked
// bilinear sample into the column buffer, then one cuBLAS GEMM per weight
// group (at::addmm_out) produces the output.
// Backward per chunk: columns rebuilt; grad_weight += grad_out @ colsᵀ and
// grad_cols = weightᵀ @ grad_out as GEMMs; grad_cols is scattered into an
// fp32 (fp64 for double) grad_input with atomics (nondeterministic, flagged),
// and one thread per (offset group, tap, pixel) reduces the offset and mask
// gradients over the group's channels (no atomics).
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

#include "../deform_conv2d.h"
#include "deblurlayers/cuda_launch.cuh"

namespace deblurlayers {
namespace deform_conv2d {
namespace {

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

template <typename scalar_t>
__device__ __forceinline__ opmath<scalar_t> mask_at(const scalar_t* mask, const Shape& s, int64_t n,
                                                    int64_t g, int64_t k, int64_t p) {
  if (mask == nullptr) return opmath<scalar_t>(1);  // no modulation (DCNv1)
  return static_cast<opmath<scalar_t>>(mask[((n * s.offset_groups + g) * s.K() + k) * s.P() + p]);
}

// cols[(c*K + k) * len + i] for the pixels p0 + i of sample n.
template <typename scalar_t>
__global__ void columns_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                               const scalar_t* __restrict__ mask, Shape s, int64_t n, int64_t p0,
                               int64_t len, scalar_t* __restrict__ cols) {
  using opmath_t = opmath<scalar_t>;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, s.rows() * len) {
    const int64_t i = idx % len, row = idx / len, k = row % s.K(), c = row / s.K();
    const int64_t g = c / s.channels_per_offset_group(), p = p0 + i;
    const auto taps = sample_taps<opmath_t>(s, offset, n, g, k, p);
    const scalar_t* plane = input + (n * s.Cin + c) * s.H * s.W;
    cols[idx] = static_cast<scalar_t>(mask_at(mask, s, n, g, k, p) * sample_value(taps, plane));
  }
}

template <typename scalar_t>
__global__ void scatter_input_kernel(const scalar_t* __restrict__ offset, const scalar_t* __restrict__ mask,
                                     const scalar_t* __restrict__ gcols, Shape s, int64_t n, int64_t p0,
                                     int64_t len, opmath<scalar_t>* __restrict__ grad_input) {
  using opmath_t = opmath<scalar_t>;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, s.rows() * len) {
    const int64_t i = idx % len, row = idx / len, k = row % s.K(), c = row / s.K();
    const int64_t g = c / s.channels_per_offset_group(), p = p0 + i;
    const auto taps = sample_taps<opmath_t>(s, offset, n, g, k, p);
    const opmath_t gm = static_cast<opmath_t>(gcols[idx]) * mask_at(mask, s, n, g, k, p);
    opmath_t* plane = grad_input + (n * s.Cin + c) * s.H * s.W;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      // a corner in the padding has weight 0: skip its atomic
      if (taps.weight[t] != opmath_t(0)) gpuAtomicAdd(plane + taps.index[t], gm * taps.weight[t]);
    }
  }
}

template <typename scalar_t>
__global__ void offset_mask_kernel(const scalar_t* __restrict__ input, const scalar_t* __restrict__ offset,
                                   const scalar_t* __restrict__ mask, const scalar_t* __restrict__ gcols,
                                   Shape s, int64_t n, int64_t p0, int64_t len,
                                   scalar_t* __restrict__ grad_offset, scalar_t* __restrict__ grad_mask) {
  using opmath_t = opmath<scalar_t>;
  DEBLURLAYERS_GRID_STRIDE_LOOP(idx, s.offset_groups * s.K() * len) {
    const int64_t i = idx % len, gk = idx / len, k = gk % s.K(), g = gk / s.K(), p = p0 + i;
    const auto taps = sample_taps<opmath_t>(s, offset, n, g, k, p);
    opmath_t d_mask = 0, d_x = 0, d_y = 0;
    const int64_t cpg = s.channels_per_offset_group();
    for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
      const scalar_t* plane = input + (n * s.Cin + c) * s.H * s.W;
      const opmath_t gc = static_cast<opmath_t>(gcols[(c * s.K() + k) * len + i]);
      opmath_t value = 0, dx = 0, dy = 0;
#pragma unroll
      for (int t = 0; t < 4; ++t) {  // corners in the padding have weight and derivatives 0
        const opmath_t v = static_cast<opmath_t>(plane[taps.index[t]]);
        value += taps.weight[t] * v;
        dx += taps.d_dx[t] * v;
        dy += taps.d_dy[t] * v;
      }
      d_mask += gc * (value + taps.nan);
      d_x += gc * dx;
      d_y += gc * dy;
    }
    const opmath_t m = mask_at(mask, s, n, g, k, p);
    const int64_t channel = (n * s.offset_groups + g) * s.K() + k;
    grad_offset[2 * channel * s.P() + p] = static_cast<scalar_t>(d_y * m);
    grad_offset[(2 * channel + 1) * s.P() + p] = static_cast<scalar_t>(d_x * m);
    if (grad_mask != nullptr) grad_mask[channel * s.P() + p] = static_cast<scalar_t>(d_mask);
  }
}

at::Tensor forward_cuda(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                        const at::Tensor& weight_, const at::Tensor& bias_, at::IntArrayRef stride,
                        at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                        int64_t offset_groups) {
  const Shape s = check_inputs(input_, offset_, mask_, weight_, stride, padding, dilation, groups,
                               offset_groups, "deform_conv2d");
  check_bias(bias_, input_, s, "deform_conv2d");
  c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({groups, s.Cout / groups, -1});
  const at::Tensor bias = bias_.contiguous().view({groups, s.Cout / groups, 1});
  at::Tensor out = at::empty({s.N, s.Cout, s.Ho, s.Wo}, input.options());
  if (out.numel() == 0) return out;
  const int64_t chunk = chunk_pixels(s, int64_t(1) << 25), group_rows = s.rows() / groups;
  at::Tensor cols_buf = at::empty({s.rows() * chunk}, input.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_cuda", [&] {
    const scalar_t* mask_ptr = has_mask(mask) ? mask.const_data_ptr<scalar_t>() : nullptr;
    for (int64_t n = 0; n < s.N; ++n) {
      const at::Tensor out_n = out[n].view({s.Cout, s.P()});
      for (int64_t p0 = 0; p0 < s.P(); p0 += chunk) {
        const int64_t len = std::min(chunk, s.P() - p0);
        at::Tensor cols = cols_buf.narrow(0, 0, s.rows() * len).view({s.rows(), len});
        columns_kernel<scalar_t><<<grid_blocks(s.rows() * len), kThreadsPerBlock, 0, stream>>>(
            input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
            mask_ptr, s, n, p0, len, cols.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        for (int64_t g = 0; g < groups; ++g) {
          at::Tensor dst = out_n.narrow(0, g * (s.Cout / groups), s.Cout / groups).narrow(1, p0, len);
          at::addmm_out(dst, bias[g], weight[g], cols.narrow(0, g * group_rows, group_rows));
        }
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& offset_,
    const at::Tensor& mask_, const at::Tensor& weight_, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  const Shape s = check_inputs(input_, offset_, mask_, weight_, stride, padding, dilation, groups,
                               offset_groups, "deform_conv2d_backward");
  check_grad_out(grad_out_, input_, s, "deform_conv2d_backward");
  c10::cuda::CUDAGuard guard(input_.device());
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({groups, s.Cout / groups, -1});
  const auto acc_type = at::toOpMathType(input.scalar_type());
  at::Tensor grad_input = at::zeros(input.sizes(), input.options().dtype(acc_type));
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = has_mask(mask) ? at::zeros_like(mask) : at::empty({0}, mask.options());
  at::Tensor grad_weight = at::zeros(weight.sizes(), weight.options().dtype(acc_type));
  at::Tensor grad_bias = grad_out.sum({0, 2, 3}, /*keepdim=*/false, acc_type);
  if (grad_out.numel() > 0 && input.numel() > 0) {
    at::globalContext().alertNotDeterministic("deblurlayers::deform_conv2d_backward (CUDA)");
    const int64_t chunk = chunk_pixels(s, int64_t(1) << 25), group_rows = s.rows() / groups;
    const int64_t cout_g = s.Cout / groups;
    at::Tensor cols_buf = at::empty({s.rows() * chunk}, input.options());
    at::Tensor gcols_buf = at::empty({s.rows() * chunk}, input.options());
    const auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_backward_cuda", [&] {
      const scalar_t* mask_ptr = has_mask(mask) ? mask.const_data_ptr<scalar_t>() : nullptr;
      scalar_t* mask_grad_ptr = has_mask(mask) ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr;
      for (int64_t n = 0; n < s.N; ++n) {
        const at::Tensor go_n = grad_out[n].view({s.Cout, s.P()});
        for (int64_t p0 = 0; p0 < s.P(); p0 += chunk) {
          const int64_t len = std::min(chunk, s.P() - p0);
          at::Tensor cols = cols_buf.narrow(0, 0, s.rows() * len).view({s.rows(), len});
          at::Tensor gcols = gcols_buf.narrow(0, 0, s.rows() * len).view({s.rows(), len});
          columns_kernel<scalar_t><<<grid_blocks(s.rows() * len), kThreadsPerBlock, 0, stream>>>(
              input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
              mask_ptr, s, n, p0, len, cols.mutable_data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          for (int64_t g = 0; g < groups; ++g) {
            const at::Tensor go = go_n.narrow(0, g * cout_g, cout_g).narrow(1, p0, len);
            grad_weight[g].add_(at::mm(go, cols.narrow(0, g * group_rows, group_rows).t()).to(acc_type));
            at::Tensor gcols_g = gcols.narrow(0, g * group_rows, group_rows);
            at::mm_out(gcols_g, weight[g].t(), go);
          }
          scatter_input_kernel<scalar_t><<<grid_blocks(s.rows() * len), kThreadsPerBlock, 0, stream>>>(
              offset.const_data_ptr<scalar_t>(), mask_ptr,
              gcols.const_data_ptr<scalar_t>(), s, n, p0, len, grad_input.mutable_data_ptr<opmath<scalar_t>>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          const int64_t entries = s.offset_groups * s.K() * len;
          offset_mask_kernel<scalar_t><<<grid_blocks(entries), kThreadsPerBlock, 0, stream>>>(
              input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
              mask_ptr, gcols.const_data_ptr<scalar_t>(), s, n, p0, len,
              grad_offset.mutable_data_ptr<scalar_t>(), mask_grad_ptr);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    });
  }
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask,
          grad_weight.view(weight_.sizes()).to(input.scalar_type()), grad_bias.to(input.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CUDA, m) {
  m.impl("deform_conv2d", &forward_cuda);
  m.impl("deform_conv2d_backward", &backward_cuda);
}

}  // namespace deform_conv2d
}  // namespace deblurlayers
