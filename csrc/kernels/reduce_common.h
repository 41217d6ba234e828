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
// SIMD levels as types, for the shared block driver (run_block). A step is kSets lane sets of V (kLanes fp32
// lanes each): avx512 2 x 16, avx2 2 x 8, scalar 1 x 16 (plain C++ lanes). The ops are each level's own
// arithmetic: fmadd is fused on avx512/avx2 and multiply-then-add on scalar; max keeps m when v is NaN on
// scalar (the SIMD max instructions return v).
//
// ABI: the driver and the kernels' steps are shared, untargeted templates. So that no untargeted function
// ever passes or returns a vector by value (GCC -Wpsabi), every op takes its operands by reference and
// writes its result through one. Each kernel's per-level entry point carries the level's target attribute
// and FPCORE_FLATTEN: the driver, the step and the ops are all inlined into it and compiled under its
// target; the scalar entry points are untargeted and touch no vector type.

// Marks a kernel's per-level entry point: everything it calls is inlined into it, under its target.
#define FPCORE_FLATTEN __attribute__((flatten))

struct Avx512 {
    using V = __m512;
    static constexpr int kLanes = 16, kSets = 2;
    static constexpr int64_t kStep = 32, kSub = kSub512;
    template <DType T, bool EO>
    FPCORE_TARGET_AVX512 static inline void load(const void* p, int64_t i, V* v) {
        ld2_512<T, EO>(p, i, v[0], v[1]);
    }
    template <DType T>
    static inline void prefetch(const void* p, int64_t i) {
        prefetch_ahead<T, kStep>(p, i);
    }
    // Trajectory visits: a prefetch line every step.
    static inline void prefetch_visit(Prefetcher& pf, int64_t) { pf.step(); }
    FPCORE_TARGET_AVX512 static inline void load_buf(V& r, const float* p) { r = _mm512_load_ps(p); }
    FPCORE_TARGET_AVX512 static inline void store_buf(float* p, const V& v) { _mm512_store_ps(p, v); }
    FPCORE_TARGET_AVX512 static inline void zero(V& r) { r = _mm512_setzero_ps(); }
    FPCORE_TARGET_AVX512 static inline void add(V& r, const V& a, const V& b) { r = _mm512_add_ps(a, b); }
    FPCORE_TARGET_AVX512 static inline void sub(V& r, const V& a, const V& b) { r = _mm512_sub_ps(a, b); }
    // acc = a * b + acc
    FPCORE_TARGET_AVX512 static inline void fmadd(V& acc, const V& a, const V& b) { acc = _mm512_fmadd_ps(a, b, acc); }
    FPCORE_TARGET_AVX512 static inline void abs(V& r, const V& a) { r = _mm512_abs_ps(a); }
    // m = max(m, v)
    FPCORE_TARGET_AVX512 static inline void max(V& m, const V& v) { m = _mm512_max_ps(m, v); }
    FPCORE_TARGET_AVX512 static inline double hsum(const V& a) { return hsum_512(a); }
    FPCORE_TARGET_AVX512 static inline double hmax(const V* m) { return hmax2_512(m[0], m[1]); }
};

struct Avx2 {
    using V = __m256;
    static constexpr int kLanes = 8, kSets = 2;
    static constexpr int64_t kStep = 16, kSub = kSub256;
    template <DType T, bool>
    FPCORE_TARGET_AVX2 static inline void load(const void* p, int64_t i, V* v) {
        ld2_256<T>(p, i, v[0], v[1]);
    }
    template <DType T>
    static inline void prefetch(const void* p, int64_t i) {
        prefetch_ahead<T, kStep>(p, i);
    }
    // Trajectory visits: a prefetch line every other step (every 32 elements).
    static inline void prefetch_visit(Prefetcher& pf, int64_t i) {
        if ((i & 31) == 0) pf.step();
    }
    FPCORE_TARGET_AVX2 static inline void load_buf(V& r, const float* p) { r = _mm256_load_ps(p); }
    FPCORE_TARGET_AVX2 static inline void store_buf(float* p, const V& v) { _mm256_store_ps(p, v); }
    FPCORE_TARGET_AVX2 static inline void zero(V& r) { r = _mm256_setzero_ps(); }
    FPCORE_TARGET_AVX2 static inline void add(V& r, const V& a, const V& b) { r = _mm256_add_ps(a, b); }
    FPCORE_TARGET_AVX2 static inline void sub(V& r, const V& a, const V& b) { r = _mm256_sub_ps(a, b); }
    FPCORE_TARGET_AVX2 static inline void fmadd(V& acc, const V& a, const V& b) { acc = _mm256_fmadd_ps(a, b, acc); }
    FPCORE_TARGET_AVX2 static inline void abs(V& r, const V& a) { r = abs_256(a); }
    FPCORE_TARGET_AVX2 static inline void max(V& m, const V& v) { m = _mm256_max_ps(m, v); }
    FPCORE_TARGET_AVX2 static inline double hsum(const V& a) { return hsum_256(a); }
    FPCORE_TARGET_AVX2 static inline double hmax(const V* m) { return hmax2_256(m[0], m[1]); }
};

struct ScalarLanes {
    float v[kScalarLanes];
};

struct Scalar {
    using V = ScalarLanes;
    static constexpr int kLanes = kScalarLanes, kSets = 1;
    static constexpr int64_t kStep = kScalarLanes, kSub = kSubScalar;
    template <DType T, bool>
    static inline void load(const void* p, int64_t i, V* v) {
        load_lanes<T>(p, i, v[0].v);
    }
    template <DType T>
    static inline void prefetch(const void*, int64_t) {}
    static inline void prefetch_visit(Prefetcher&, int64_t) {}
    static inline void load_buf(V& r, const float* p) {
        for (int l = 0; l < kLanes; ++l) r.v[l] = p[l];
    }
    static inline void store_buf(float* p, const V& a) {
        for (int l = 0; l < kLanes; ++l) p[l] = a.v[l];
    }
    static inline void zero(V& r) { r = V{}; }
    static inline void add(V& r, const V& a, const V& b) {
        for (int l = 0; l < kLanes; ++l) r.v[l] = a.v[l] + b.v[l];
    }
    static inline void sub(V& r, const V& a, const V& b) {
        for (int l = 0; l < kLanes; ++l) r.v[l] = a.v[l] - b.v[l];
    }
    static inline void fmadd(V& acc, const V& a, const V& b) {
        for (int l = 0; l < kLanes; ++l) acc.v[l] += a.v[l] * b.v[l];
    }
    static inline void abs(V& r, const V& a) {
        for (int l = 0; l < kLanes; ++l) r.v[l] = std::fabs(a.v[l]);
    }
    static inline void max(V& m, const V& a) {
        for (int l = 0; l < kLanes; ++l) m.v[l] = a.v[l] > m.v[l] ? a.v[l] : m.v[l];
    }
    static inline double hsum(const V& a) { return lanes_sum(a.v); }
    static inline double hmax(const V* m) { return lanes_max(m[0].v); }
};

// NS fp32 sums, two-level: sub[set][k] for the current sub-block, acc[k] for the block; plus the running
// max of NM metrics per set (the max has no sub-block level).
template <class Isa, int NS, int NM>
struct Sums {
    using V = typename Isa::V;
    V acc[NS], sub[Isa::kSets][NS], mx[NM > 0 ? NM : 1][Isa::kSets];
    Sums() {
        for (int k = 0; k < NS; ++k) Isa::zero(acc[k]);
        for (int m = 0; m < NM; ++m) {
            for (int h = 0; h < Isa::kSets; ++h) Isa::zero(mx[m][h]);
        }
    }
    void begin_sub() {
        for (int h = 0; h < Isa::kSets; ++h) {
            for (int k = 0; k < NS; ++k) Isa::zero(sub[h][k]);
        }
    }
    // acc += sub[0] (+ sub[1]).
    void end_sub() {
        for (int k = 0; k < NS; ++k) {
            if constexpr (Isa::kSets == 2) {
                V s;
                Isa::add(s, sub[0][k], sub[1][k]);
                Isa::add(acc[k], acc[k], s);
            } else {
                Isa::add(acc[k], acc[k], sub[0][k]);
            }
        }
    }
    // out[0..NS) = the sums' lanes summed in fp64, then out[NS..NS+NM) = the maxima.
    void finish(double* out) const {
        for (int k = 0; k < NS; ++k) out[k] = Isa::hsum(acc[k]);
        for (int m = 0; m < NM; ++m) out[NS + m] = Isa::hmax(mx[m]);
    }
};

template <DType>
constexpr DType kAsF32 = DType::F32;

// The block driver of the streaming kernels (pair, triple, trajectory_consecutive): runs k over elements
// off .. off+len-1 of the streams p[0..sizeof...(Ts)) (dtypes Ts), sub-block by sub-block, and writes the
// block's partials to out. k.sums is a Sums; k.step<FULL, Us...>(q, j, i) runs one step on elements
// j .. j+kStep-1 of the streams q (dtypes Us), i = the step's first element inside the block. The elements past the
// last full step are converted to a zero-padded fp32 scratch and run through the same step (FULL = false: natural lane
// order, no prefetch). Called only from FPCORE_FLATTEN entry points that carry Isa's target.
template <class Isa, DType... Ts, class K>
static inline void run_block(K& k, const void* const* p, int64_t off, int64_t len, double* out) {
    constexpr int N = sizeof...(Ts);
    constexpr int64_t W = Isa::kStep;
    for (int64_t c0 = 0; c0 < len; c0 += Isa::kSub) {
        const int64_t ce = std::min(len, c0 + Isa::kSub);
        k.sums.begin_sub();
        int64_t i = c0;
        for (; i + W <= ce; i += W) k.template step<true, Ts...>(p, off + i, i);
        if (i < ce) {
            alignas(64) float t[N][W];
            const void* tp[N];
            int n = 0;
            ((tail_to_f32(p[n], Ts, off + i, ce - i, t[n], static_cast<int>(W)), tp[n] = t[n], ++n), ...);
            k.template step<false, kAsF32<Ts>...>(tp, 0, i);
        }
        k.sums.end_sub();
    }
    k.sums.finish(out);
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
