// Private to csrc/kernels: what the reduction kernels (pair_stats.cpp, triple_stats.cpp, trajectory.cpp)
// share -- block enumeration, the deterministic fold, scratch buffers and per-level SIMD helpers.
//
// The numerics these helpers implement are specified at the top of pair_stats.cpp.
#pragma once
// GCC 12.1/12.2 warn that the avx512 intrinsics' internal _mm512_undefined_*() value "is used uninitialized"
// (GCC bug 105593, fixed in 12.3): a false positive inside the system header, silenced for it alone.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fpcore/cpu.h"
#include "fpcore/dtype.h"
#include "fpcore/kernels.h"
#include "fpcore/simd_load.h"

namespace fpcore {
namespace kernels {
namespace reduce {

// ---------------------------------------------------------------------------------------------------------
// Blocks and the deterministic fold.

struct Block {
    int64_t tensor;  // index into the span list
    int64_t off;     // first element inside the tensor
    int64_t len;     // 1 .. kBlock
};

// Blocks of the spans s[0..nt) (tensor sizes; for trajectories the first checkpoint's).
inline std::vector<Block> make_blocks(const Span* s, int64_t nt) {
    int64_t nb = 0;
    for (int64_t i = 0; i < nt; ++i) nb += (s[i].n + kBlock - 1) / kBlock;
    std::vector<Block> blocks;
    blocks.reserve(static_cast<size_t>(nb));
    for (int64_t i = 0; i < nt; ++i) {
        for (int64_t off = 0; off < s[i].n; off += kBlock) blocks.push_back({i, off, std::min(kBlock, s[i].n - off)});
    }
    return blocks;
}

// 64-byte aligned, zero-initialised float buffer.
class FloatBuf {
   public:
    FloatBuf() = default;
    explicit FloatBuf(size_t n) {
        const size_t bytes = ((std::max<size_t>(n, 1) * sizeof(float)) + 63) / 64 * 64;
        p_ = static_cast<float*>(std::aligned_alloc(64, bytes));
        if (p_ == nullptr) throw std::bad_alloc();
        std::memset(p_, 0, bytes);
    }
    FloatBuf(FloatBuf&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    FloatBuf& operator=(FloatBuf&& o) noexcept {
        std::swap(p_, o.p_);
        return *this;
    }
    FloatBuf(const FloatBuf&) = delete;
    FloatBuf& operator=(const FloatBuf&) = delete;
    ~FloatBuf() { std::free(p_); }
    float* get() const { return p_; }

   private:
    float* p_ = nullptr;
};

// Partials buffered per round of blocks: at most this many doubles (the round is at least one block per
// thread). Rounds only bound memory; they do not change the order of the fold.
constexpr int64_t kFoldBudget = int64_t{1} << 20;

// Computes fn(b, part, scratch) for every block b = 0..nblocks-1, where fn writes the block's K partials
// to part[0..K), and folds them into res[0..K) in block order: res[k] += part[k] for k < nsum,
// res[k] = max(res[k], part[k]) for the rest (NaN dropped: callers derive NaN from a sum). Blocks are
// shared among up to num_threads() threads (contiguous ranges, at least min_per_thread blocks each);
// make() builds one thread's scratch. The result does not depend on the thread count.
template <class Make, class Fn>
void fold_blocks(int64_t nblocks, int64_t K, int64_t nsum, int64_t min_per_thread, double* res, Make make, Fn fn) {
    for (int64_t k = 0; k < K; ++k) res[k] = 0.0;
    if (nblocks <= 0) return;
    auto fold1 = [&](int64_t k, const double* part, int64_t count) {
        double acc = res[k];
        if (k < nsum) {
            for (int64_t b = 0; b < count; ++b) acc += part[b * K + k];
        } else {
            for (int64_t b = 0; b < count; ++b) {
                const double v = part[b * K + k];
                acc = v > acc ? v : acc;
            }
        }
        res[k] = acc;
    };
    int64_t nthr = num_threads();
    nthr = std::max<int64_t>(1, std::min<int64_t>(nthr, nblocks / std::max<int64_t>(min_per_thread, 1)));
    if (nthr == 1) {
        auto scratch = make();
        std::vector<double> part(static_cast<size_t>(K));
        for (int64_t b = 0; b < nblocks; ++b) {
            fn(b, part.data(), scratch);
            for (int64_t k = 0; k < K; ++k) fold1(k, part.data(), 1);
        }
        return;
    }
#ifdef _OPENMP
    // Rounds of R blocks bound the partials buffer; they do not change the order of the fold.
    const int64_t R = std::min(nblocks, std::max<int64_t>(nthr, kFoldBudget / std::max<int64_t>(K, 1) / nthr * nthr));
    std::vector<decltype(make())> scratch;
    scratch.reserve(static_cast<size_t>(nthr));
    for (int64_t t = 0; t < nthr; ++t) scratch.push_back(make());
    std::vector<double> part(static_cast<size_t>(R * K));
#pragma omp parallel num_threads(static_cast<int>(nthr))
    {
        auto& s = scratch[static_cast<size_t>(omp_get_thread_num())];
        for (int64_t r0 = 0; r0 < nblocks; r0 += R) {
            const int64_t r1 = std::min(nblocks, r0 + R);
#pragma omp for schedule(static)
            for (int64_t b = r0; b < r1; ++b) fn(b, part.data() + (b - r0) * K, s);
#pragma omp for schedule(static)
            for (int64_t k = 0; k < K; ++k) fold1(k, part.data(), r1 - r0);
        }
    }
#endif
}

struct NoScratch {};

// Sub-block of the two-level fp32 accumulation (a multiple of every SIMD step; kBlock is a multiple of it).
// Sub-blocks of the two-level fp32 accumulation: 16 steps of each kernel, i.e. 16 values per lane.
constexpr int64_t kSub512 = 16 * 32;      // avx512 pair / triple / consecutive: 2 x 16 lanes a step
constexpr int64_t kSub256 = 16 * 16;      // avx2: 2 x 8 lanes a step
constexpr int64_t kSubScalar = 16 * 16;   // scalar: 16 lanes (also its trajectory_all tiles)
constexpr int64_t kSubTile512 = 16 * 16;  // avx512 trajectory_all tiles: 16 lanes per pair
constexpr int64_t kSubTile256 = 16 * 8;   // avx2 trajectory_all tiles: 8 lanes per pair
static_assert(kBlock % kSub512 == 0 && kBlock % kSub256 == 0, "blocks are whole sub-blocks");

// Software prefetch into L2, a line or two per SIMD step of the current kernel.
struct Prefetcher {
    const char* p = nullptr;  // next line to prefetch (stays valid: points at data already read if none)
    int64_t stride = 64;      // bytes per step(): 64, or 128 when the prefetched rows are wider than the current
    inline void step() {
        _mm_prefetch(p, _MM_HINT_T2);
        if (stride > 64) _mm_prefetch(p + 64, _MM_HINT_T2);
        p += stride;
    }
};

// Streaming kernels (pair, triple) prefetch each input this many bytes ahead of the loads, into L2: the
// hardware prefetcher alone leaves the bf16 kernels ~15-20% below the read roofline on the target (2 cores).
constexpr int64_t kStreamAhead = 16384;

// Prefetch for elements i .. i+count-1 of p, kStreamAhead bytes ahead (count * size <= 128 bytes).
template <DType T, int count>
static inline void prefetch_ahead(const void* p, int64_t i) {
    const char* a = static_cast<const char*>(p) + i * dtype_size(T) + kStreamAhead;
    _mm_prefetch(a, _MM_HINT_T2);
    if constexpr (count * (T == DType::F32 ? 4 : 2) > 64) _mm_prefetch(a + 64, _MM_HINT_T2);
}

// ---------------------------------------------------------------------------------------------------------
// Scalar helpers (the generic path: 16 lanes of plain C++, vectorised by the compiler where it can).

constexpr int kScalarLanes = 16;

// dst[0..width) = elements i .. i+count-1 of p as fp32, zero past count (count <= width).
inline void tail_to_f32(const void* p, DType t, int64_t i, int64_t count, float* dst, int width) {
    for (int k = 0; k < width; ++k) dst[k] = k < count ? load_f32(p, t, i + k) : 0.0f;
}

template <DType T>
static inline void load_lanes(const void* p, int64_t i, float* dst) {
    for (int l = 0; l < kScalarLanes; ++l) dst[l] = load_f32(p, T, i + l);
}

static inline double lanes_sum(const float* v) {
    double s = 0.0;
    for (int l = 0; l < kScalarLanes; ++l) s += static_cast<double>(v[l]);
    return s;
}

static inline double lanes_max(const float* v) {
    float m = 0.0f;
    for (int l = 0; l < kScalarLanes; ++l) m = v[l] > m ? v[l] : m;
    return m;
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512 helpers: 32 elements a step as two 16-lane vectors.

// Elements i .. i+31 of p: natural order (a = i..i+15, b = i+16..i+31), or for EO (bf16 only) even / odd.
template <DType T, bool EO>
FPCORE_TARGET_AVX512 static inline void ld2_512(const void* p, int64_t i, __m512& a, __m512& b) {
    if constexpr (EO) {
        static_assert(T == DType::BF16, "even/odd order is for bf16");
        const __m512i v = _mm512_loadu_si512(static_cast<const uint16_t*>(p) + i);
        a = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
        b = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
    } else {
        a = simd::load16(p, T, i);
        b = simd::load16(p, T, i + 16);
    }
}

FPCORE_TARGET_AVX512 static inline __m512d widen_sum_512(__m512 v) {
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
    return _mm512_add_pd(lo, hi);
}

// fp64 sum of the 16 lanes of v.
FPCORE_TARGET_AVX512 static inline double hsum_512(__m512 v) {
    return _mm512_reduce_add_pd(widen_sum_512(v));
}

// fp64 sum of the 32 lanes of a and b.
FPCORE_TARGET_AVX512 static inline double hsum2_512(__m512 a, __m512 b) {
    return _mm512_reduce_add_pd(_mm512_add_pd(widen_sum_512(a), widen_sum_512(b)));
}

FPCORE_TARGET_AVX512 static inline double hmax2_512(__m512 a, __m512 b) {
    return static_cast<double>(_mm512_reduce_max_ps(_mm512_max_ps(a, b)));
}

// ---------------------------------------------------------------------------------------------------------
// AVX2 helpers: 16 elements a step as two 8-lane vectors (natural order).

template <DType T>
FPCORE_TARGET_AVX2 static inline void ld2_256(const void* p, int64_t i, __m256& a, __m256& b) {
    a = simd::load8(p, T, i);
    b = simd::load8(p, T, i + 8);
}

FPCORE_TARGET_AVX2 static inline __m256d widen_sum_256(__m256 v) {
    return _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

FPCORE_TARGET_AVX2 static inline double reduce_pd_256(__m256d s) {
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    x = _mm_add_sd(x, _mm_unpackhi_pd(x, x));
    return _mm_cvtsd_f64(x);
}

FPCORE_TARGET_AVX2 static inline double hsum_256(__m256 v) {
    return reduce_pd_256(widen_sum_256(v));
}

FPCORE_TARGET_AVX2 static inline double hsum2_256(__m256 a, __m256 b) {
    return reduce_pd_256(_mm256_add_pd(widen_sum_256(a), widen_sum_256(b)));
}

FPCORE_TARGET_AVX2 static inline double hmax2_256(__m256 a, __m256 b) {
    __m256 m = _mm256_max_ps(a, b);
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return static_cast<double>(_mm_cvtss_f32(x));
}

FPCORE_TARGET_AVX2 static inline __m256 abs_256(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

// ---------------------------------------------------------------------------------------------------------
// Dispatch on run-time dtypes: calls f(std::integral_constant<DType, t>{}).

template <DType T>
using DTag = std::integral_constant<DType, T>;

template <class F>
static inline auto with_dtype(DType t, F&& f) {
    switch (t) {
        case DType::BF16: return f(DTag<DType::BF16>{});
        case DType::F16: return f(DTag<DType::F16>{});
        case DType::F32: break;
    }
    return f(DTag<DType::F32>{});
}

}  // namespace reduce
}  // namespace kernels
}  // namespace fpcore
