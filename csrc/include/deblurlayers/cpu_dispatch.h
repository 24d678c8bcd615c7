// Function multiversioning for hot CPU loops.
#pragma once

// DEBLURLAYERS_CPU_CLONES before a function compiles it twice -- for
// x86-64-v3 (AVX2 + FMA) and for the baseline -- and lets the loader pick the
// best the CPU supports. The kernels are built just in time, so -march=native
// would be simpler, but a cached build directory may be shared by machines
// with different CPUs (a network home, a container image), and a binary built
// for a newer CPU dies with SIGILL on an older one.
//
// Lambdas do not inherit the attribute: put the hot loop in a named function.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    !defined(__CUDACC__)
#define DEBLURLAYERS_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DEBLURLAYERS_CPU_CLONES
#endif
