// Output allocation for streaming CPU kernels.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace deblurlayers {

// at::empty, plus a transparent-huge-page hint for large CPU outputs.
//
// A streaming kernel writes each output byte once, so on fresh memory its
// cost is dominated by first-touch page faults: glibc hands out buffers above
// its mmap threshold (32 MiB at most) as new pages on every call, and a 4 KiB
// fault costs ~2 us on virtual machines -- more than the kernel's own work
// (64x360x640 Haar DWT here: 18 ms with 4 KiB pages, 7 ms with the hint).
// Advising huge pages on the untouched buffer cuts the faults 512-fold. The
// hint only covers whole 2 MiB pages inside the buffer, changes no data, and
// is ignored where THP is disabled.
inline at::Tensor empty_output(at::IntArrayRef sizes,
                               const at::TensorOptions& options) {
  at::Tensor out = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t(2) << 20;
  const uintptr_t bytes = out.nbytes();
  if (out.device().is_cpu() && bytes >= 4 * kHugePage) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(out.data_ptr());
    const uintptr_t begin = (start + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t end = (start + bytes) & ~(kHugePage - 1);
    if (end > begin) {
      // Advice only: a failure leaves ordinary pages, which is still correct.
      (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    }
  }
#endif
  return out;
}

}  // namespace deblurlayers
