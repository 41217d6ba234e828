// Run-time choice of the SIMD level, so one build runs on any x86-64 CPU.
#pragma once
#include <string>

namespace fpcore {

enum class Simd : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// What this CPU supports (AVX-512 here means F+BW+VL+DQ; AVX2 means AVX2+FMA+F16C).
Simd simd_detected();
bool cpu_has_avx512bf16();
// The level kernels use: the detected one unless lowered by simd_force() or FPCORE_SIMD=scalar|avx2|avx512.
Simd simd_active();
// Force a level (for tests and benchmarks). Returns false when the CPU lacks it.
bool simd_force(Simd level);
void simd_reset();
const char* simd_name(Simd level);

// Threads kernels use (OpenMP when built with it, else 1).
int num_threads();
void set_num_threads(int n);

}  // namespace fpcore

#if defined(__GNUC__) || defined(__clang__)
#define FPCORE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,avx2,bmi2")))
#define FPCORE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi2")))
#else
#define FPCORE_TARGET_AVX512
#define FPCORE_TARGET_AVX2
#endif
