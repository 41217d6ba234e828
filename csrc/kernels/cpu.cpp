#include "fpcore/cpu.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fpcore {

namespace {

Simd detect() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    if (avx512 && avx2) return Simd::Avx512;
    if (avx2) return Simd::Avx2;
#endif
    return Simd::Scalar;
}

Simd from_env(Simd detected) {
    const char* s = std::getenv("FPCORE_SIMD");
    if (s == nullptr || *s == '\0' || std::strcmp(s, "auto") == 0) return detected;
    Simd want = detected;
    if (std::strcmp(s, "scalar") == 0) want = Simd::Scalar;
    if (std::strcmp(s, "avx2") == 0) want = Simd::Avx2;
    if (std::strcmp(s, "avx512") == 0) want = Simd::Avx512;
    return static_cast<int>(want) <= static_cast<int>(detected) ? want : detected;
}

Simd g_detected = detect();
Simd g_active = from_env(g_detected);

}  // namespace

Simd simd_detected() {
    return g_detected;
}

bool cpu_has_avx512bf16() {
#if defined(__x86_64__) && (defined(__GNUC__) && __GNUC__ >= 10)
    return __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

Simd simd_active() {
    return g_active;
}

bool simd_force(Simd level) {
    if (static_cast<int>(level) > static_cast<int>(g_detected)) return false;
    g_active = level;
    return true;
}

void simd_reset() {
    g_active = from_env(g_detected);
}

const char* simd_name(Simd level) {
    switch (level) {
        case Simd::Scalar: return "scalar";
        case Simd::Avx2: return "avx2";
        case Simd::Avx512: return "avx512";
    }
    return "unknown";
}

// fpcore keeps its own thread count and passes it to every parallel region (num_threads clause):
// omp_set_num_threads is shared with torch, which resets it on its own ops.
namespace {
int initial_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
std::atomic<int> g_threads{initial_threads()};
}  // namespace

int num_threads() {
    return g_threads.load(std::memory_order_relaxed);
}

void set_num_threads(int n) {
#ifdef _OPENMP
    if (n > 0) g_threads.store(n, std::memory_order_relaxed);
#else
    (void)n;
#endif
}

}  // namespace fpcore
