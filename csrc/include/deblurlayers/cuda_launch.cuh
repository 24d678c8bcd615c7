// Launch helpers shared by the CUDA kernels: 1-D grids with grid-stride loops
// and int64 indices (video tensors exceed 2^31 elements).
#pragma once

#include <algorithm>
#include <cstdint>

namespace deblurlayers {

constexpr int kThreadsPerBlock = 256;

// Enough blocks to cover n, capped: the grid-stride loops cover the rest and
// 65535 * 8 blocks saturate any GPU.
inline int64_t grid_blocks(int64_t n) {
  return std::min<int64_t>((n + kThreadsPerBlock - 1) / kThreadsPerBlock, int64_t(65535) * 8);
}

}  // namespace deblurlayers

#define DEBLURLAYERS_GRID_STRIDE_LOOP(i, n)                                  \
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
       i += (int64_t)gridDim.x * blockDim.x)
