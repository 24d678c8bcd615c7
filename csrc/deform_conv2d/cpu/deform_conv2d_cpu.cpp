// Modulated deformable convolution (DCNv2) on the CPU.
//
// Output pixels are processed in chunks whose (Cin*K, chunk) column matrix
// stays below ~4M elements (chunk_pixels), so memory does not grow with the
// image: for each chunk the masked bilinear samples are written into the
// column buffer (parallel over (offset group, tap, block of 64 pixels); the
// taps of a block are computed once and reused by every channel of the
// group), then one GEMM per weight group, multithreaded by ATen, turns them
// into the output (bias folded into the GEMM).
//
// Backward, per chunk: the columns are rebuilt; grad_weight += grad_out @
// colsᵀ and grad_cols = weightᵀ @ grad_out are GEMMs; grad_cols is then
// scattered into grad_input by tasks that own disjoint input channels, and
// reduced into grad_offset / grad_mask by tasks that own disjoint (group,
// tap, pixel) entries. No atomics: the result is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../deform_conv2d.h"
#include "deblurlayers/cpu_dispatch.h"

namespace deblurlayers {
namespace deform_conv2d {
namespace {

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

constexpr int64_t kBlock = 64;     // output pixels whose taps are computed together
constexpr int64_t kChannels = 8;   // input channels per grad_input task

template <typename scalar_t>
struct Inputs {
  const scalar_t* input;
  const scalar_t* offset;
  const scalar_t* mask;
  Shape s;
};

// The pixels [p0, p0 + len) of a chunk, split into blocks of kBlock.
struct Chunk {
  int64_t n, p0, len;
  int64_t blocks() const { return (len + kBlock - 1) / kBlock; }
};

template <typename scalar_t>
inline opmath<scalar_t> mask_at(const Inputs<scalar_t>& in, int64_t n, int64_t g, int64_t k, int64_t p) {
  return static_cast<opmath<scalar_t>>(in.mask[((n * in.s.offset_groups + g) * in.s.K() + k) * in.s.P() + p]);
}

// Taps and masks of tap k for the pixels of one block; returns the block length.
template <typename scalar_t>
inline int64_t block_taps(const Inputs<scalar_t>& in, const Chunk& ch, int64_t g, int64_t k, int64_t block,
                          ZeroPadBilinear<opmath<scalar_t>>* taps, opmath<scalar_t>* m) {
  const int64_t b0 = block * kBlock, b1 = std::min(ch.len, b0 + kBlock);
  for (int64_t i = 0; i < b1 - b0; ++i) {
    const int64_t p = ch.p0 + b0 + i;
    taps[i] = sample_taps<opmath<scalar_t>>(in.s, in.offset, ch.n, g, k, p);
    m[i] = mask_at(in, ch.n, g, k, p);
  }
  return b1 - b0;
}

// Column rows (c*K + k) of the channels of offset group g, for one block.
template <typename scalar_t>
DEBLURLAYERS_CPU_CLONES void fill_columns_task(int64_t task, const Inputs<scalar_t>& in, const Chunk& ch,
                                               scalar_t* cols) {
  using opmath_t = opmath<scalar_t>;
  const Shape& s = in.s;
  const int64_t block = task % ch.blocks(), gk = task / ch.blocks(), k = gk % s.K(), g = gk / s.K();
  ZeroPadBilinear<opmath_t> taps[kBlock];
  opmath_t m[kBlock];
  const int64_t count = block_taps(in, ch, g, k, block, taps, m);
  const int64_t cpg = s.channels_per_offset_group(), hw = s.H * s.W;
  for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
    const scalar_t* plane = in.input + (ch.n * s.Cin + c) * hw;
    scalar_t* row = cols + (c * s.K() + k) * ch.len + block * kBlock;
    for (int64_t i = 0; i < count; ++i) row[i] = static_cast<scalar_t>(m[i] * sample_value(taps[i], plane));
  }
}

template <typename scalar_t>
void fill_columns(const Inputs<scalar_t>& in, const Chunk& ch, scalar_t* cols) {
  const int64_t tasks = in.s.offset_groups * in.s.K() * ch.blocks();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) fill_columns_task(t, in, ch, cols);
  });
}

// grad_input of up to kChannels channels of one offset group (task = (g, channel chunk)).
template <typename scalar_t>
DEBLURLAYERS_CPU_CLONES void scatter_input_task(int64_t task, const Inputs<scalar_t>& in, const Chunk& ch,
                                                const scalar_t* gcols, opmath<scalar_t>* grad_input) {
  using opmath_t = opmath<scalar_t>;
  const Shape& s = in.s;
  const int64_t cpg = s.channels_per_offset_group(), chunks_per_group = (cpg + kChannels - 1) / kChannels;
  const int64_t g = task / chunks_per_group, c0 = g * cpg + (task % chunks_per_group) * kChannels;
  const int64_t c1 = std::min(c0 + kChannels, (g + 1) * cpg), hw = s.H * s.W;
  ZeroPadBilinear<opmath_t> taps[kBlock];
  opmath_t m[kBlock];
  for (int64_t k = 0; k < s.K(); ++k) {
    for (int64_t block = 0; block < ch.blocks(); ++block) {
      const int64_t count = block_taps(in, ch, g, k, block, taps, m);
      for (int64_t c = c0; c < c1; ++c) {
        opmath_t* plane = grad_input + (ch.n * s.Cin + c) * hw;
        const scalar_t* row = gcols + (c * s.K() + k) * ch.len + block * kBlock;
        for (int64_t i = 0; i < count; ++i) {
          if (!taps[i].inside) continue;
          const opmath_t gm = static_cast<opmath_t>(row[i]) * m[i];
          for (int t = 0; t < 4; ++t) {
            if (taps[i].valid[t]) plane[taps[i].offset[t]] += gm * taps[i].weight[t];
          }
        }
      }
    }
  }
}

// grad_offset and grad_mask of one (offset group, tap, block) of the chunk.
template <typename scalar_t>
DEBLURLAYERS_CPU_CLONES void offset_mask_task(int64_t task, const Inputs<scalar_t>& in, const Chunk& ch,
                                              const scalar_t* gcols, scalar_t* grad_offset, scalar_t* grad_mask) {
  using opmath_t = opmath<scalar_t>;
  const Shape& s = in.s;
  const int64_t block = task % ch.blocks(), gk = task / ch.blocks(), k = gk % s.K(), g = gk / s.K();
  ZeroPadBilinear<opmath_t> taps[kBlock];
  opmath_t m[kBlock], d_mask[kBlock], d_x[kBlock], d_y[kBlock];
  const int64_t count = block_taps(in, ch, g, k, block, taps, m);
  std::fill_n(d_mask, count, opmath_t(0));
  std::fill_n(d_x, count, opmath_t(0));
  std::fill_n(d_y, count, opmath_t(0));
  const int64_t cpg = s.channels_per_offset_group(), hw = s.H * s.W;
  for (int64_t c = g * cpg; c < (g + 1) * cpg; ++c) {
    const scalar_t* plane = in.input + (ch.n * s.Cin + c) * hw;
    const scalar_t* row = gcols + (c * s.K() + k) * ch.len + block * kBlock;
    for (int64_t i = 0; i < count; ++i) {
      const auto& tp = taps[i];
      if (!tp.inside) continue;
      const opmath_t gc = static_cast<opmath_t>(row[i]);
      opmath_t value = 0, dx = 0, dy = 0;
      for (int t = 0; t < 4; ++t) {
        if (!tp.valid[t]) continue;
        const opmath_t v = static_cast<opmath_t>(plane[tp.offset[t]]);
        value += tp.weight[t] * v;
        dx += tp.dweight_dx[t] * v;
        dy += tp.dweight_dy[t] * v;
      }
      d_mask[i] += gc * value;
      d_x[i] += gc * dx;
      d_y[i] += gc * dy;
    }
  }
  const int64_t channel = (ch.n * s.offset_groups + g) * s.K() + k, first = ch.p0 + block * kBlock;
  scalar_t* go = grad_offset + 2 * channel * s.P() + first;
  scalar_t* gm = grad_mask + channel * s.P() + first;
  for (int64_t i = 0; i < count; ++i) {
    go[i] = static_cast<scalar_t>(d_y[i] * m[i]);
    go[s.P() + i] = static_cast<scalar_t>(d_x[i] * m[i]);
    gm[i] = static_cast<scalar_t>(d_mask[i]);
  }
}

at::Tensor forward_cpu(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                       const at::Tensor& weight_, const at::Tensor& bias_, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       int64_t offset_groups) {
  const Shape s = check_inputs(input_, offset_, mask_, weight_, stride, padding, dilation, groups,
                               offset_groups, "deform_conv2d");
  check_bias(bias_, input_, s, "deform_conv2d");
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({groups, s.Cout / groups, -1});
  const at::Tensor bias = bias_.contiguous().view({groups, s.Cout / groups, 1});
  at::Tensor out = at::empty({s.N, s.Cout, s.Ho, s.Wo}, input.options());
  if (out.numel() == 0) return out;
  const int64_t chunk = chunk_pixels(s), group_rows = s.rows() / groups;
  at::Tensor cols_buf = at::empty({s.rows() * chunk}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d", [&] {
    const Inputs<scalar_t> in{input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                              mask.const_data_ptr<scalar_t>(), s};
    for (int64_t n = 0; n < s.N; ++n) {
      const at::Tensor out_n = out[n].view({s.Cout, s.P()});
      for (int64_t p0 = 0; p0 < s.P(); p0 += chunk) {
        const Chunk ch{n, p0, std::min(chunk, s.P() - p0)};
        at::Tensor cols = cols_buf.narrow(0, 0, s.rows() * ch.len).view({s.rows(), ch.len});
        fill_columns(in, ch, cols.mutable_data_ptr<scalar_t>());
        for (int64_t g = 0; g < groups; ++g) {
          at::Tensor dst = out_n.narrow(0, g * (s.Cout / groups), s.Cout / groups).narrow(1, p0, ch.len);
          at::addmm_out(dst, bias[g], weight[g], cols.narrow(0, g * group_rows, group_rows));
        }
      }
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out_, const at::Tensor& input_, const at::Tensor& offset_,
    const at::Tensor& mask_, const at::Tensor& weight_, at::IntArrayRef stride, at::IntArrayRef padding,
    at::IntArrayRef dilation, int64_t groups, int64_t offset_groups) {
  const Shape s = check_inputs(input_, offset_, mask_, weight_, stride, padding, dilation, groups,
                               offset_groups, "deform_conv2d_backward");
  check_grad_out(grad_out_, input_, s, "deform_conv2d_backward");
  const at::Tensor input = input_.contiguous(), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous();
  const at::Tensor weight = weight_.contiguous().view({groups, s.Cout / groups, -1});
  const auto acc_type = at::toOpMathType(input.scalar_type());
  at::Tensor grad_input = at::zeros(input.sizes(), input.options().dtype(acc_type));
  at::Tensor grad_offset = at::zeros_like(offset), grad_mask = at::zeros_like(mask);
  at::Tensor grad_weight = at::zeros(weight.sizes(), weight.options().dtype(acc_type));
  at::Tensor grad_bias = grad_out.sum({0, 2, 3}, /*keepdim=*/false, acc_type);
  if (grad_out.numel() > 0 && input.numel() > 0) {
    const int64_t chunk = chunk_pixels(s), group_rows = s.rows() / groups, cout_g = s.Cout / groups;
    at::Tensor cols_buf = at::empty({s.rows() * chunk}, input.options());
    at::Tensor gcols_buf = at::empty({s.rows() * chunk}, input.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_backward", [&] {
      const Inputs<scalar_t> in{input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                                mask.const_data_ptr<scalar_t>(), s};
      const int64_t cpg = s.channels_per_offset_group();
      const int64_t input_tasks = s.offset_groups * ((cpg + kChannels - 1) / kChannels);
      for (int64_t n = 0; n < s.N; ++n) {
        const at::Tensor go_n = grad_out[n].view({s.Cout, s.P()});
        for (int64_t p0 = 0; p0 < s.P(); p0 += chunk) {
          const Chunk ch{n, p0, std::min(chunk, s.P() - p0)};
          at::Tensor cols = cols_buf.narrow(0, 0, s.rows() * ch.len).view({s.rows(), ch.len});
          at::Tensor gcols = gcols_buf.narrow(0, 0, s.rows() * ch.len).view({s.rows(), ch.len});
          fill_columns(in, ch, cols.mutable_data_ptr<scalar_t>());
          for (int64_t g = 0; g < groups; ++g) {
            const at::Tensor go = go_n.narrow(0, g * cout_g, cout_g).narrow(1, p0, ch.len);
            const at::Tensor cols_g = cols.narrow(0, g * group_rows, group_rows);
            if (acc_type == input.scalar_type()) {
              grad_weight[g].addmm_(go, cols_g.t());
            } else {
              grad_weight[g].add_(at::mm(go, cols_g.t()).to(acc_type));
            }
            at::Tensor gcols_g = gcols.narrow(0, g * group_rows, group_rows);
            at::mm_out(gcols_g, weight[g].t(), go);
          }
          const scalar_t* gc = gcols.const_data_ptr<scalar_t>();
          at::parallel_for(0, input_tasks, 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t)
              scatter_input_task(t, in, ch, gc, grad_input.mutable_data_ptr<opmath<scalar_t>>());
          });
          at::parallel_for(0, s.offset_groups * s.K() * ch.blocks(), 1, [&](int64_t begin, int64_t end) {
            for (int64_t t = begin; t < end; ++t)
              offset_mask_task(t, in, ch, gc, grad_offset.mutable_data_ptr<scalar_t>(),
                               grad_mask.mutable_data_ptr<scalar_t>());
          });
        }
      }
    });
  }
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask,
          grad_weight.view(weight_.sizes()).to(input.scalar_type()), grad_bias.to(input.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CPU, m) {
  m.impl("deform_conv2d", &forward_cpu);
  m.impl("deform_conv2d_backward", &backward_cpu);
}

}  // namespace deform_conv2d
}  // namespace deblurlayers
