// Modulated deformable convolution (DCNv2) on the CPU.
//
// Channels-last inside: the input is viewed as (N, H, W, Cin), so the four
// bilinear corners of one (pixel, tap, offset group) are four contiguous runs
// of the group's channels. Sampling is then a vectorised multiply-add over
// channels, and the bilinear coefficients (the scalar part) are computed once
// per (pixel, tap, offset group) instead of once per channel.
//
// Output pixels are processed in tiles whose columns fit a thread's L2 cache
// (tile_pixels), so memory does not grow with the image. The columns are
// stored transposed, cols[wg][pixel][tap][channel of wg], and the weight is
// permuted to (Cout, KH, KW, Cin/groups) to match; per tile, one GEMM per
// weight group gives the output, bias folded in, while the columns are cached.
// In fp32 on an AVX-512 CPU that GEMM is our own register-blocked kernel
// (tile_gemm.h), not at::addmm.
//
// Sampling waits on memory, not arithmetic: each (offset group, tap) pass over
// a block reads three rows (dy, dx, mask) that no hardware prefetcher tracks,
// and four scattered corners per pixel. Both are software-prefetched ahead of
// use (prefetch_next_block, kCornerLead).
//
// Backward: workers take contiguous runs of tiles. Per tile the columns are
// rebuilt; grad_weight += grad_out @ cols and grad_cols = grad_outᵀ @ weight are
// GEMMs; while grad_cols is still in cache one pass per (offset group, tap,
// block of pixels) reduces it into grad_offset / grad_mask (tiles own disjoint
// pixels) and scatters it into the worker's own channels-last grad_input
// accumulator, summed in worker order at the end. No atomics: the result is
// deterministic for a given thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "../deform_conv2d.h"
#include "deblurlayers/cpu_dispatch.h"
#include "tile_gemm.h"

namespace deblurlayers {
namespace deform_conv2d {
namespace {

template <typename scalar_t>
using opmath = at::opmath_type<scalar_t>;

constexpr int64_t kBlock = 64;     // output pixels whose coefficients are computed together
constexpr int64_t kAccumulatorBytes = int64_t(1) << 30;  // all backward workers' grad_input accumulators
constexpr int64_t kCornerLead = 8;  // pixels ahead whose corners the sampling loop prefetches
constexpr int64_t kTileBytes = int64_t(1) << 19;  // forward column tile, per thread

template <typename scalar_t>
struct Inputs {
  const scalar_t* input;  // (N, H, W, Cin)
  const scalar_t* offset;
  const scalar_t* mask;  // nullptr: no modulation
  Shape s;
};

// The pixels [p0, p0 + len) of sample n, split into blocks of kBlock.
struct Chunk {
  int64_t n, p0, len;
  int64_t blocks() const { return (len + kBlock - 1) / kBlock; }
};

// Transposed columns of one chunk: row (wg, i) holds, for pixel p0 + i, the
// K * Cin/groups samples of weight group wg, tap-major.
template <typename T>
struct Columns {
  T* data;
  int64_t len, Cin_g, K;
  T* at(int64_t wg, int64_t i, int64_t k, int64_t c_g) const {
    return data + ((wg * len + i) * K + k) * Cin_g + c_g;
  }
};

// Bilinear corners of tap k for the pixels of one block and offset group g,
// as structure-of-arrays with the zero padding folded in: a corner outside the
// image gets a clamped pixel index and weight 0, so the channel loops are branch-free.
template <typename opmath_t>
struct TapBlock {
  int64_t first, count;          // pixels [first, first + count) of the sample
  opmath_t origin_y[kBlock];     // ho * sh - ph: where tap (0, 0) of the pixel lies
  opmath_t origin_x[kBlock];
  int32_t index[4][kBlock];      // y * W + x of the corner
  opmath_t weight[4][kBlock];    // interpolation weight, times the mask if folded
  opmath_t mask[kBlock];
  opmath_t nan[kBlock];          // 0, or NaN for a non-finite sample (ClampedBilinear::nan)
  opmath_t d_dx[4][kBlock];      // d weight / dx (0 when outside); backward only
  opmath_t d_dy[4][kBlock];
};

// The offsets and the mask are read as 3 * offset_groups * K rows per block of pixels, each
// touched once: too many streams for the hardware prefetchers, so every block would wait on DRAM
// for its rows. Each block's pass therefore asks for the same rows of the next block, which it
// reaches offset_groups * K passes later.
template <typename scalar_t>
inline void prefetch_next_block(const scalar_t* row, int64_t remaining) {
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t i = kBlock; i < std::min(2 * kBlock, remaining); i += kLine) __builtin_prefetch(row + i, 0, 2);
}

// Starts tb on block `block` of the chunk: its pixels and their tap origins, shared by every
// offset group and tap.
template <typename opmath_t>
void locate_block(const Shape& s, const Chunk& ch, int64_t block, TapBlock<opmath_t>& tb) {
  const int64_t b0 = block * kBlock;
  tb.first = ch.p0 + b0;
  tb.count = std::min(ch.len, b0 + kBlock) - b0;
  int64_t ho = tb.first / s.Wo, wo = tb.first % s.Wo;
  for (int64_t i = 0; i < tb.count; ++i) {
    tb.origin_y[i] = static_cast<opmath_t>(ho * s.sh - s.ph);
    tb.origin_x[i] = static_cast<opmath_t>(wo * s.sw - s.pw);
    if (++wo == s.Wo) wo = 0, ++ho;
  }
}

// The corners come from clamped_bilinear (csrc/include, the CUDA kernel's math
// too). One flat loop without integer division or branches, so that it
// vectorises (this needs -fno-trapping-math): it runs once per (offset group,
// tap, pixel).
template <bool kDerivatives, bool kFoldMask, typename scalar_t>
DEBLURLAYERS_CPU_CLONES void prepare_block(const Inputs<scalar_t>& in, const Chunk& ch, int64_t g, int64_t k,
                                           TapBlock<opmath<scalar_t>>& tb) {
  using opmath_t = opmath<scalar_t>;
  const Shape& s = in.s;
  const int64_t first = tb.first, count = tb.count;
  const int64_t channel = (ch.n * s.offset_groups + g) * s.K() + k;
  const scalar_t* __restrict off_y = in.offset + 2 * channel * s.P() + first;
  const scalar_t* __restrict off_x = off_y + s.P();
  // Without a mask, a block of ones: a select per pixel would become a masked load, which
  // stalls on AMD CPUs.
  scalar_t ones[kBlock];
  if (in.mask == nullptr) std::fill_n(ones, kBlock, scalar_t(1));
  const scalar_t* __restrict mask = in.mask != nullptr ? in.mask + channel * s.P() + first : ones;
  prefetch_next_block(off_y, s.P() - first);
  prefetch_next_block(off_x, s.P() - first);
  if (in.mask != nullptr) prefetch_next_block(mask, s.P() - first);
  const opmath_t tap_y = static_cast<opmath_t>((k / s.KW) * s.dh), tap_x = static_cast<opmath_t>((k % s.KW) * s.dw);
  const int32_t H = static_cast<int32_t>(s.H), W = static_cast<int32_t>(s.W);
  for (int64_t i = 0; i < count; ++i) {
    const opmath_t y = tb.origin_y[i] + tap_y + static_cast<opmath_t>(off_y[i]);
    const opmath_t x = tb.origin_x[i] + tap_x + static_cast<opmath_t>(off_x[i]);
    const opmath_t m = static_cast<opmath_t>(mask[i]);
    const ClampedBilinear<opmath_t, int32_t> c = clamped_bilinear<opmath_t, int32_t>(x, y, H, W);
    tb.mask[i] = m;
    if (kDerivatives) tb.nan[i] = c.nan;  // the backward's grad_mask; sampling folds it into the weights
    for (int t = 0; t < 4; ++t) {
      tb.index[t][i] = c.index[t];
      // Folded for sampling, one weight carries a non-finite sample's NaN into its value; the
      // backward's scatter weights must not (the reference leaves grad_input finite).
      tb.weight[t][i] = kFoldMask ? (t == 0 ? c.weight[t] + c.nan : c.weight[t]) * m : c.weight[t];
      if (kDerivatives) {
        tb.d_dx[t][i] = c.d_dx[t];
        tb.d_dy[t][i] = c.d_dy[t];
      }
    }
  }
}

// Calls fn(c0, c1, wg) for the runs [c0, c1) of the channels of offset group g
// that lie in one weight group wg.
template <typename Fn>
inline void for_each_run(const Shape& s, int64_t c_begin, int64_t c_end, Fn&& fn) {
  const int64_t cin_g = s.Cin / s.groups;
  for (int64_t c0 = c_begin; c0 < c_end;) {
    const int64_t wg = c0 / cin_g, c1 = std::min(c_end, (wg + 1) * cin_g);
    fn(c0, c1, wg);
    c0 = c1;
  }
}

// out[i * out_stride + j] = the bilinear sample of channel j < n at the corners of pixel i of the
// block (a run of one offset group's channels within one weight group). kChannels > 0 fixes
// n at compile time: the common run lengths then need no vector-remainder or aliasing checks.
template <int kChannels, typename scalar_t, typename opmath_t>
C10_ALWAYS_INLINE void sample_run(const TapBlock<opmath_t>& tb, const scalar_t* __restrict sample, int64_t stride,
                                  scalar_t* __restrict out, int64_t out_stride, int64_t n_runtime) {
  const int64_t n = kChannels > 0 ? kChannels : n_runtime;
  for (int64_t i = 0; i < tb.count; ++i, out += out_stride) {
    if (i + kCornerLead < tb.count) {
      for (int t = 0; t < 4; ++t) __builtin_prefetch(sample + tb.index[t][i + kCornerLead] * stride, 0, 3);
    }
    const scalar_t* __restrict a = sample + tb.index[0][i] * stride;
    const scalar_t* __restrict b = sample + tb.index[1][i] * stride;
    const scalar_t* __restrict c = sample + tb.index[2][i] * stride;
    const scalar_t* __restrict d = sample + tb.index[3][i] * stride;
    const opmath_t wa = tb.weight[0][i], wb = tb.weight[1][i], wc = tb.weight[2][i], wd = tb.weight[3][i];
    for (int64_t j = 0; j < n; ++j) {
      out[j] = static_cast<scalar_t>(wa * static_cast<opmath_t>(a[j]) + wb * static_cast<opmath_t>(b[j]) +
                                     wc * static_cast<opmath_t>(c[j]) + wd * static_cast<opmath_t>(d[j]));
    }
  }
}

// Columns of every offset group and tap for one block of pixels.
template <typename scalar_t>
DEBLURLAYERS_CPU_CLONES void fill_columns_block(int64_t block, const Inputs<scalar_t>& in, const Chunk& ch,
                                                const Columns<scalar_t>& cols) {
  using opmath_t = opmath<scalar_t>;
  const Shape& s = in.s;
  const int64_t cpg = s.channels_per_offset_group(), cin_g = s.Cin / s.groups;
  TapBlock<opmath_t> tb;
  locate_block(s, ch, block, tb);
  for (int64_t g = 0; g < s.offset_groups; ++g) {
    for (int64_t k = 0; k < s.K(); ++k) {
      prepare_block</*kDerivatives=*/false, /*kFoldMask=*/true>(in, ch, g, k, tb);
      for_each_run(s, g * cpg, (g + 1) * cpg, [&](int64_t c0, int64_t c1, int64_t wg) {
        const scalar_t* sample = in.input + ch.n * s.H * s.W * s.Cin + c0;
        scalar_t* out = cols.at(wg, tb.first - ch.p0, k, c0 - wg * cin_g);
        const int64_t out_stride = cols.K * cols.Cin_g;
        if (c1 - c0 == 8) {
          sample_run<8>(tb, sample, s.Cin, out, out_stride, 8);
        } else {
          sample_run<0>(tb, sample, s.Cin, out, out_stride, c1 - c0);
        }
      });
    }
  }
}

// For one block of pixels and every offset group and tap, from the column gradients: grad_offset
// and grad_mask (dot products of the column gradient with the four corners, then the bilinear
// derivatives), and the scatter of the column gradient into a channels-last grad_input
// accumulator. One set of coefficients serves both.
template <typename scalar_t>
DEBLURLAYERS_CPU_CLONES void input_offset_mask_block(int64_t block, const Inputs<scalar_t>& in, const Chunk& ch,
                                                     const Columns<const scalar_t>& gcols, scalar_t* grad_offset,
                                                     scalar_t* grad_mask, opmath<scalar_t>* grad_input) {
  using opmath_t = opmath<scalar_t>;
  const Shape& s = in.s;
  const int64_t cpg = s.channels_per_offset_group(), cin_g = s.Cin / s.groups;
  const scalar_t* sample = in.input + ch.n * s.H * s.W * s.Cin;
  opmath_t* grad_sample = grad_input + ch.n * s.H * s.W * s.Cin;
  TapBlock<opmath_t> tb;
  locate_block(s, ch, block, tb);
  for (int64_t g = 0; g < s.offset_groups; ++g) {
    for (int64_t k = 0; k < s.K(); ++k) {
      prepare_block</*kDerivatives=*/true, /*kFoldMask=*/false>(in, ch, g, k, tb);
      // dot[t][i]: grad_cols · corner t over the group's channels.
      opmath_t dot[4][kBlock] = {};
      for_each_run(s, g * cpg, (g + 1) * cpg, [&](int64_t c0, int64_t c1, int64_t wg) {
        const int64_t n = c1 - c0;
        for (int64_t i = 0; i < tb.count; ++i) {
          const scalar_t* __restrict gc = gcols.at(wg, tb.first - ch.p0 + i, k, c0 - wg * cin_g);
          for (int t = 0; t < 4; ++t) {
            const int64_t offset = tb.index[t][i] * s.Cin + c0;
            const scalar_t* __restrict v = sample + offset;
            opmath_t* __restrict dst = grad_sample + offset;
            const opmath_t w = tb.weight[t][i] * tb.mask[i];
            opmath_t acc = 0;
            for (int64_t j = 0; j < n; ++j) {
              const opmath_t grad = static_cast<opmath_t>(gc[j]);
              acc += grad * static_cast<opmath_t>(v[j]);
              dst[j] += w * grad;
            }
            dot[t][i] += acc;
          }
        }
      });
      const int64_t channel = (ch.n * s.offset_groups + g) * s.K() + k;
      scalar_t* go = grad_offset + 2 * channel * s.P() + tb.first;
      scalar_t* gm = grad_mask != nullptr ? grad_mask + channel * s.P() + tb.first : nullptr;
      for (int64_t i = 0; i < tb.count; ++i) {
        opmath_t value = tb.nan[i], dx = 0, dy = 0;
        for (int t = 0; t < 4; ++t) {
          value += tb.weight[t][i] * dot[t][i];
          dx += tb.d_dx[t][i] * dot[t][i];
          dy += tb.d_dy[t][i] * dot[t][i];
        }
        go[i] = static_cast<scalar_t>(dy * tb.mask[i]);
        go[s.P() + i] = static_cast<scalar_t>(dx * tb.mask[i]);
        if (gm != nullptr) gm[i] = static_cast<scalar_t>(value);
      }
    }
  }
}

// (Cout, Cin/groups, KH, KW) -> (groups, Cout/groups, KH*KW*Cin/groups), the column order.
at::Tensor weight_tap_major(const at::Tensor& weight, const Shape& s) {
  return weight.permute({0, 2, 3, 1}).reshape({s.groups, s.Cout / s.groups, -1});
}

at::Tensor channels_last(const at::Tensor& input) { return input.permute({0, 2, 3, 1}).contiguous(); }

// Output pixels per tile: their columns stay in the L2 cache (at least one block).
int64_t tile_pixels(const Shape& s, int64_t element_size) {
  const int64_t fit = kTileBytes / element_size / std::max<int64_t>(1, s.rows()) / kBlock * kBlock;
  return std::min(s.P(), std::max(kBlock, fit));
}

// out_n (Cout, P) pixels [p0, p0 + len) = bias + weight @ the tile's columns, by the AVX-512
// tile GEMM (fp32 only: the other dtypes take at::addmm), through buf (tile, Cout/groups).
inline void gemm_tile_into_output(const Columns<float>& cols, const Chunk& ch, const Shape& s,
                                  const PackedWeight& packed, const at::Tensor& buf, const at::Tensor& out_n) {
  const int64_t cout_g = s.Cout / s.groups, group_rows = s.rows() / s.groups;
  float* b = buf.mutable_data_ptr<float>();
  float* dst = out_n.mutable_data_ptr<float>() + ch.p0;
  for (int64_t g = 0; g < s.groups; ++g) {
    tile_gemm(cols.at(g, 0, 0, 0), group_rows, ch.len, packed.group_weight(g), packed.group_bias(g), cout_g, b,
              cout_g);
    for (int64_t co = 0; co < cout_g; ++co) {
      float* __restrict row = dst + (g * cout_g + co) * s.P();
      for (int64_t i = 0; i < ch.len; ++i) row[i] = b[i * cout_g + co];
    }
  }
}

template <typename scalar_t>
void gemm_tile_into_output(const Columns<scalar_t>&, const Chunk&, const Shape&, const PackedWeight&,
                           const at::Tensor&, const at::Tensor&) {
  TORCH_INTERNAL_ASSERT(false, "deform_conv2d: the tile GEMM is fp32 only");
}

at::Tensor forward_cpu(const at::Tensor& input_, const at::Tensor& offset_, const at::Tensor& mask_,
                       const at::Tensor& weight_, const at::Tensor& bias_, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       int64_t offset_groups) {
  const Shape s = check_inputs(input_, offset_, mask_, weight_, stride, padding, dilation, groups,
                               offset_groups, "deform_conv2d");
  check_bias(bias_, input_, s, "deform_conv2d");
  at::Tensor out = at::empty({s.N, s.Cout, s.Ho, s.Wo}, input_.options());
  if (out.numel() == 0) return out;
  const at::Tensor input = channels_last(input_), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor weight = weight_tap_major(weight_, s);
  const at::Tensor bias = bias_.contiguous().view({groups, s.Cout / groups, 1});
  const int64_t cout_g = s.Cout / groups, group_rows = s.rows() / groups;
  // Tiles of output pixels whose columns stay in the L2 cache between
  // sampling and the GEMM; each thread owns one column buffer.
  const int64_t tile = tile_pixels(s, input.element_size());
  const int64_t tiles_per_sample = (s.P() + tile - 1) / tile;
  at::Tensor cols_buf = at::empty({at::get_num_threads(), groups, tile, group_rows}, input.options());
  // fp32 on an AVX-512 CPU: our tile GEMM into a (pixels, Cout/groups) buffer, then transposed
  // into the output; otherwise at::addmm straight into the output.
  const bool own_gemm = input.scalar_type() == at::kFloat && tile_gemm_available();
  PackedWeight packed;
  at::Tensor out_buf;
  if (own_gemm) {
    packed = pack_weight(weight, bias.view({groups, cout_g}));
    out_buf = at::empty({at::get_num_threads(), tile, cout_g}, input.options());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d", [&] {
    const Inputs<scalar_t> in{input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                              has_mask(mask) ? mask.const_data_ptr<scalar_t>() : nullptr, s};
    // The GEMMs below go through the dispatcher from worker threads, which
    // must see this thread's dispatch state (below autograd, inference mode).
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, s.N * tiles_per_sample, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard state_guard(caller_state);
      const at::Tensor cols_thread = cols_buf[at::get_thread_num()];
      for (int64_t t = begin; t < end; ++t) {
        const int64_t n = t / tiles_per_sample, p0 = (t % tiles_per_sample) * tile;
        const Chunk ch{n, p0, std::min(tile, s.P() - p0)};
        const at::Tensor cols = cols_thread.narrow(1, 0, ch.len);
        const Columns<scalar_t> view{cols.mutable_data_ptr<scalar_t>(), tile, s.Cin / groups, s.K()};
        for (int64_t b = 0; b < ch.blocks(); ++b) fill_columns_block(b, in, ch, view);
        const at::Tensor out_n = out[n].view({s.Cout, s.P()});
        if (own_gemm) {
          gemm_tile_into_output(view, ch, s, packed, out_buf[at::get_thread_num()], out_n);
          continue;
        }
        for (int64_t g = 0; g < groups; ++g) {
          at::Tensor dst = out_n.narrow(0, g * cout_g, cout_g).narrow(1, p0, ch.len);
          at::addmm_out(dst, bias[g], weight[g], cols[g].t());
        }
      }
    });
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
  const at::Tensor input = channels_last(input_), offset = offset_.contiguous(), mask = mask_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous();
  const at::Tensor weight = weight_tap_major(weight_, s);
  const auto acc_type = at::toOpMathType(input.scalar_type());
  const int64_t group_rows = s.rows() / groups, cout_g = s.Cout / groups, cin_g = s.Cin / groups;
  const int64_t tile = tile_pixels(s, input.element_size());
  const int64_t tiles_per_sample = (s.P() + tile - 1) / tile, tiles = s.N * tiles_per_sample;
  // Workers own contiguous runs of tiles and private channels-last grad_input accumulators
  // (summed in worker order at the end: deterministic for a given thread count), as many as
  // the threads, within a memory budget.
  const int64_t accumulator_bytes = std::max<int64_t>(1, input.numel() * int64_t(c10::elementSize(acc_type)));
  const int64_t workers = std::max<int64_t>(
      1, std::min<int64_t>({static_cast<int64_t>(at::get_num_threads()), tiles, kAccumulatorBytes / accumulator_bytes}));
  at::Tensor grad_input_parts = at::zeros({workers, s.N, s.H, s.W, s.Cin}, input.options().dtype(acc_type));
  at::Tensor grad_offset = at::zeros_like(offset);
  at::Tensor grad_mask = has_mask(mask) ? at::zeros_like(mask) : at::empty({0}, mask.options());
  at::Tensor grad_weight_parts = at::zeros({workers, s.groups, cout_g, group_rows}, weight.options().dtype(acc_type));
  at::Tensor grad_bias = grad_out.sum({0, 2, 3}, /*keepdim=*/false, acc_type);
  if (grad_out.numel() > 0 && input.numel() > 0) {
    at::Tensor cols_buf = at::empty({workers, groups, tile, group_rows}, input.options());
    at::Tensor gcols_buf = at::empty({workers, groups, tile, group_rows}, input.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "deform_conv2d_backward", [&] {
      const Inputs<scalar_t> in{input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                                has_mask(mask) ? mask.const_data_ptr<scalar_t>() : nullptr, s};
      const at::ThreadLocalState caller_state;  // see forward_cpu
      at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
        const at::ThreadLocalStateGuard state_guard(caller_state);
        for (int64_t w = begin; w < end; ++w) {
          const at::Tensor cols_w = cols_buf[w], gcols_w = gcols_buf[w], grad_weight = grad_weight_parts[w];
          opmath<scalar_t>* grad_input = grad_input_parts[w].mutable_data_ptr<opmath<scalar_t>>();
          for (int64_t t = w * tiles / workers; t < (w + 1) * tiles / workers; ++t) {
            const int64_t n = t / tiles_per_sample, p0 = (t % tiles_per_sample) * tile;
            const Chunk tc{n, p0, std::min(tile, s.P() - p0)};
            // The tile's columns and their gradients stay in cache from the GEMMs to the scatter.
            const at::Tensor cols = cols_w.narrow(1, 0, tc.len), gcols = gcols_w.narrow(1, 0, tc.len);
            const Columns<scalar_t> cols_view{cols.mutable_data_ptr<scalar_t>(), tile, cin_g, s.K()};
            for (int64_t b = 0; b < tc.blocks(); ++b) fill_columns_block(b, in, tc, cols_view);
            const at::Tensor go_n = grad_out[n].view({s.Cout, s.P()});
            for (int64_t g = 0; g < groups; ++g) {
              const at::Tensor go = go_n.narrow(0, g * cout_g, cout_g).narrow(1, tc.p0, tc.len);
              if (acc_type == input.scalar_type()) {
                grad_weight[g].addmm_(go, cols[g]);
              } else {
                grad_weight[g].add_(at::mm(go, cols[g]).to(acc_type));
              }
              at::Tensor gcols_g = gcols[g];
              at::mm_out(gcols_g, go.t(), weight[g]);
            }
            const Columns<const scalar_t> gc{gcols_w.const_data_ptr<scalar_t>(), tile, cin_g, s.K()};
            for (int64_t b = 0; b < tc.blocks(); ++b)
              input_offset_mask_block(b, in, tc, gc, grad_offset.mutable_data_ptr<scalar_t>(),
                                      has_mask(mask) ? grad_mask.mutable_data_ptr<scalar_t>() : nullptr, grad_input);
          }
        }
      });
    });
  }
  const at::Tensor grad_input = workers == 1 ? grad_input_parts[0] : grad_input_parts.sum(0);
  const at::Tensor grad_weight = grad_weight_parts.sum(0)
                                     .view({s.Cout, s.KH, s.KW, s.Cin / groups})
                                     .permute({0, 3, 1, 2})
                                     .contiguous();
  return {grad_input.permute({0, 3, 1, 2}).contiguous().to(input.scalar_type()), grad_offset, grad_mask,
          grad_weight.to(input.scalar_type()), grad_bias.to(input.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(deblurlayers, CPU, m) {
  m.impl("deform_conv2d", &forward_cpu);
  m.impl("deform_conv2d_backward", &backward_cpu);
}

}  // namespace deform_conv2d
}  // namespace deblurlayers
