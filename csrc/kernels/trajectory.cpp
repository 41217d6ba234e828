// Trajectory statistics over T checkpoints (each a list of tensors), every checkpoint read from memory once.
//
// Numerics: see the top of pair_stats.cpp (fp32 lanes inside blocks of kBlock elements, fp64 partials folded
// in block order, identical for any thread count; linf NaN iff l2sq NaN).
//
// trajectory_consecutive: for each block of elements, checkpoints t = 0..T-1 are visited in turn. Block t is
// loaded and widened to fp32 once; that one pass gives |theta_t|^2 and the pair (t-1, t) against the fp32
// copy of block t-1 kept in a 16 KB (L1-resident) buffer, which block t then overwrites in place. So each
// element is read from memory once and converted once, and |theta_t|^2 is computed once per checkpoint.
// Visiting T streams in 8 KB bursts defeats the hardware prefetcher, so each visit software-prefetches (into
// L2) the block it will visit kPrefetchVisits visits later. Work per 32 bf16 elements on avx512: 16 vector
// ops (2 to widen, then per 16 lanes sub, abs, 3 FMA, add, max), ~4 elements per cycle per core.
//
// trajectory_all: each block is walked in sub-chunks of S elements (256..512, see kAllSubMax). For a
// sub-chunk, the T checkpoints' elements are widened into an fp32 buffer (T x S floats, in L2), then register
// tiles of pairs (i <= j) run over it: 4 x 2 pairs on avx512, 2 x 2 on avx2/scalar, two accumulators per pair
// (<x_i,x_j> and |x_i - x_j|^2 from the differences, never the Gram identity). The tiles' fp32 block-level
// lane accumulators are parked in a spill buffer between sub-chunks, so the accumulation order inside a block
// is the same as for one pass (S changes speed, not results). Every checkpoint is read from memory once: the
// next block's rows are software-prefetched into L2 while the current block's tiles compute. Compute bound
// for T >~ 8 (3 vector ops per pair per 16 elements). l2sq[i][i] is exactly 0, as in the reference.
#include "reduce_common.h"

namespace fpcore {
namespace kernels {

namespace {

using namespace reduce;

// ==========================================================================================================
// Consecutive pairs
// ==========================================================================================================

// One checkpoint's block: cur = elements off .. off+len-1 of p. Writes out[0] = |cur|^2 and, with PREV (buf
// holds the previous checkpoint's block, fp32, same lane order), out[1..4] = dot, l1, l2sq, linf of
// (prev, cur). Leaves cur in buf. pf: lines of a later block to prefetch meanwhile.
using StepFn = void (*)(const void* p, int64_t off, int64_t len, float* buf, double* out, Prefetcher pf);

// --- AVX-512 ----------------------------------------------------------------------------------------------

struct StepSum512 {
    __m512 norm, dot, l1, l2;
};

FPCORE_TARGET_AVX512 static inline void step_zero_512(StepSum512& a) {
    a.norm = a.dot = a.l1 = a.l2 = _mm512_setzero_ps();
}

template <bool PREV>
FPCORE_TARGET_AVX512 static inline void step_body_512(StepSum512& a, __m512& mx, float* buf, __m512 c) {
    if constexpr (PREV) {
        const __m512 p = _mm512_load_ps(buf);
        const __m512 d = _mm512_sub_ps(p, c);
        const __m512 ad = _mm512_abs_ps(d);
        a.dot = _mm512_fmadd_ps(p, c, a.dot);
        a.l2 = _mm512_fmadd_ps(d, d, a.l2);
        a.l1 = _mm512_add_ps(a.l1, ad);
        mx = _mm512_max_ps(mx, ad);
    }
    _mm512_store_ps(buf, c);
    a.norm = _mm512_fmadd_ps(c, c, a.norm);
}

template <bool PREV>
FPCORE_TARGET_AVX512 static inline void step_fold_512(StepSum512& acc, const StepSum512& s0, const StepSum512& s1) {
    acc.norm = _mm512_add_ps(acc.norm, _mm512_add_ps(s0.norm, s1.norm));
    if constexpr (PREV) {
        acc.dot = _mm512_add_ps(acc.dot, _mm512_add_ps(s0.dot, s1.dot));
        acc.l1 = _mm512_add_ps(acc.l1, _mm512_add_ps(s0.l1, s1.l1));
        acc.l2 = _mm512_add_ps(acc.l2, _mm512_add_ps(s0.l2, s1.l2));
    }
}

template <DType T, bool EO, bool PREV>
FPCORE_TARGET_AVX512 void step_512(const void* p, int64_t off, int64_t len, float* buf, double* out, Prefetcher pf) {
    StepSum512 acc;
    step_zero_512(acc);
    __m512 mx0 = _mm512_setzero_ps(), mx1 = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < len; c0 += kSub512) {
        const int64_t ce = std::min(len, c0 + kSub512);
        StepSum512 s0, s1;
        step_zero_512(s0);
        step_zero_512(s1);
        int64_t i = c0;
        for (; i + 32 <= ce; i += 32) {
            pf.step();
            __m512 c0v, c1v;
            ld2_512<T, EO>(p, off + i, c0v, c1v);
            step_body_512<PREV>(s0, mx0, buf + i, c0v);
            step_body_512<PREV>(s1, mx1, buf + i + 16, c1v);
        }
        if (i < ce) {
            alignas(64) float tc[32];
            tail_to_f32(p, T, off + i, ce - i, tc, 32);
            __m512 c0v, c1v;
            ld2_512<DType::F32, false>(tc, 0, c0v, c1v);
            step_body_512<PREV>(s0, mx0, buf + i, c0v);
            step_body_512<PREV>(s1, mx1, buf + i + 16, c1v);
        }
        step_fold_512<PREV>(acc, s0, s1);
    }
    out[0] = hsum_512(acc.norm);
    if constexpr (PREV) {
        out[1] = hsum_512(acc.dot);
        out[2] = hsum_512(acc.l1);
        out[3] = hsum_512(acc.l2);
        out[4] = hmax2_512(mx0, mx1);
    }
}

// --- AVX2 -------------------------------------------------------------------------------------------------

struct StepSum256 {
    __m256 norm, dot, l1, l2;
};

FPCORE_TARGET_AVX2 static inline void step_zero_256(StepSum256& a) {
    a.norm = a.dot = a.l1 = a.l2 = _mm256_setzero_ps();
}

template <bool PREV>
FPCORE_TARGET_AVX2 static inline void step_body_256(StepSum256& a, __m256& mx, float* buf, __m256 c) {
    if constexpr (PREV) {
        const __m256 p = _mm256_load_ps(buf);
        const __m256 d = _mm256_sub_ps(p, c);
        const __m256 ad = abs_256(d);
        a.dot = _mm256_fmadd_ps(p, c, a.dot);
        a.l2 = _mm256_fmadd_ps(d, d, a.l2);
        a.l1 = _mm256_add_ps(a.l1, ad);
        mx = _mm256_max_ps(mx, ad);
    }
    _mm256_store_ps(buf, c);
    a.norm = _mm256_fmadd_ps(c, c, a.norm);
}

template <bool PREV>
FPCORE_TARGET_AVX2 static inline void step_fold_256(StepSum256& acc, const StepSum256& s0, const StepSum256& s1) {
    acc.norm = _mm256_add_ps(acc.norm, _mm256_add_ps(s0.norm, s1.norm));
    if constexpr (PREV) {
        acc.dot = _mm256_add_ps(acc.dot, _mm256_add_ps(s0.dot, s1.dot));
        acc.l1 = _mm256_add_ps(acc.l1, _mm256_add_ps(s0.l1, s1.l1));
        acc.l2 = _mm256_add_ps(acc.l2, _mm256_add_ps(s0.l2, s1.l2));
    }
}

template <DType T, bool PREV>
FPCORE_TARGET_AVX2 void step_256(const void* p, int64_t off, int64_t len, float* buf, double* out, Prefetcher pf) {
    StepSum256 acc;
    step_zero_256(acc);
    __m256 mx0 = _mm256_setzero_ps(), mx1 = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < len; c0 += kSub256) {
        const int64_t ce = std::min(len, c0 + kSub256);
        StepSum256 s0, s1;
        step_zero_256(s0);
        step_zero_256(s1);
        int64_t i = c0;
        for (; i + 16 <= ce; i += 16) {
            if ((i & 31) == 0) pf.step();
            __m256 c0v, c1v;
            ld2_256<T>(p, off + i, c0v, c1v);
            step_body_256<PREV>(s0, mx0, buf + i, c0v);
            step_body_256<PREV>(s1, mx1, buf + i + 8, c1v);
        }
        if (i < ce) {
            alignas(32) float tc[16];
            tail_to_f32(p, T, off + i, ce - i, tc, 16);
            __m256 c0v, c1v;
            ld2_256<DType::F32>(tc, 0, c0v, c1v);
            step_body_256<PREV>(s0, mx0, buf + i, c0v);
            step_body_256<PREV>(s1, mx1, buf + i + 8, c1v);
        }
        step_fold_256<PREV>(acc, s0, s1);
    }
    out[0] = hsum_256(acc.norm);
    if constexpr (PREV) {
        out[1] = hsum_256(acc.dot);
        out[2] = hsum_256(acc.l1);
        out[3] = hsum_256(acc.l2);
        out[4] = hmax2_256(mx0, mx1);
    }
}

// --- Scalar -----------------------------------------------------------------------------------------------

struct StepSumS {
    float norm[kScalarLanes], dot[kScalarLanes], l1[kScalarLanes], l2[kScalarLanes];
};

template <bool PREV>
static inline void step_body_scalar(StepSumS& a, float* mx, float* buf, const float* c) {
    for (int l = 0; l < kScalarLanes; ++l) {
        if constexpr (PREV) {
            const float p = buf[l];
            const float d = p - c[l];
            const float ad = std::fabs(d);
            a.dot[l] += p * c[l];
            a.l2[l] += d * d;
            a.l1[l] += ad;
            mx[l] = ad > mx[l] ? ad : mx[l];
        }
        buf[l] = c[l];
        a.norm[l] += c[l] * c[l];
    }
}

static inline void step_fold_scalar(StepSumS& acc, const StepSumS& s) {
    for (int l = 0; l < kScalarLanes; ++l) {
        acc.norm[l] += s.norm[l];
        acc.dot[l] += s.dot[l];
        acc.l1[l] += s.l1[l];
        acc.l2[l] += s.l2[l];
    }
}

template <DType T, bool PREV>
void step_scalar(const void* p, int64_t off, int64_t len, float* buf, double* out, Prefetcher) {
    StepSumS acc = {};
    float mx[kScalarLanes] = {};
    float c[kScalarLanes];
    for (int64_t c0 = 0; c0 < len; c0 += kSubScalar) {
        const int64_t ce = std::min(len, c0 + kSubScalar);
        StepSumS s = {};
        int64_t i = c0;
        for (; i + kScalarLanes <= ce; i += kScalarLanes) {
            load_lanes<T>(p, off + i, c);
            step_body_scalar<PREV>(s, mx, buf + i, c);
        }
        if (i < ce) {
            tail_to_f32(p, T, off + i, ce - i, c, kScalarLanes);
            step_body_scalar<PREV>(s, mx, buf + i, c);
        }
        step_fold_scalar(acc, s);
    }
    out[0] = lanes_sum(acc.norm);
    if constexpr (PREV) {
        out[1] = lanes_sum(acc.dot);
        out[2] = lanes_sum(acc.l1);
        out[3] = lanes_sum(acc.l2);
        out[4] = lanes_max(mx);
    }
}

template <bool PREV>
StepFn pick_step(Simd level, DType t, bool eo) {
    return with_dtype(t, [&](auto X) -> StepFn {
        constexpr DType A = decltype(X)::value;
        switch (level) {
            case Simd::Avx512:
                if constexpr (A == DType::BF16) {
                    if (eo) return &step_512<A, true, PREV>;
                }
                return &step_512<A, false, PREV>;
            case Simd::Avx2: return &step_256<A, PREV>;
            case Simd::Scalar: break;
        }
        return &step_scalar<A, PREV>;
    });
}

// Whether tensor i of every checkpoint is bf16 (then avx512 uses the even/odd lane order for it).
std::vector<char> all_bf16(const Span* ckpt, int64_t T, int64_t nt) {
    std::vector<char> eo(static_cast<size_t>(nt), 1);
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < nt; ++i) eo[i] = eo[i] && ckpt[t * nt + i].t == DType::BF16;
    }
    return eo;
}

// ==========================================================================================================
// All pairs
// ==========================================================================================================

// Widens elements off .. off+len-1 of p to fp32 at dst (the level's lane order), zero-padded to a whole
// number of steps.
using ConvFn = void (*)(const void* p, int64_t off, int64_t len, float* dst);

// One register tile of pairs (i0 + r, j0 + c) over dst elements 0 .. n-1 of the buffer (row stride S).
// mode: kLoad = resume the accumulators from spill; kStore = park them in spill; otherwise the tile is final
// and writes out[2p], out[2p+1] (dot, l2sq) for every pair p = (i, j), i <= j < T, it holds.
using TileFn = void (*)(const float* buf, int64_t S, int64_t i0, int64_t j0, int64_t n, float* spill, int mode,
                        int64_t T, double* out);
constexpr int kLoad = 1, kStore = 2;

// Index of pair (i, j), i <= j, in the packed upper triangle.
static inline int64_t pair_index(int64_t i, int64_t j, int64_t T) {
    return i * T - i * (i - 1) / 2 + (j - i);
}

// --- AVX-512 ----------------------------------------------------------------------------------------------

template <DType T, bool EO>
FPCORE_TARGET_AVX512 void conv_512(const void* p, int64_t off, int64_t len, float* dst) {
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512 a, b;
        ld2_512<T, EO>(p, off + i, a, b);
        _mm512_store_ps(dst + i, a);
        _mm512_store_ps(dst + i + 16, b);
    }
    if (i < len) tail_to_f32(p, T, off + i, len - i, dst + i, 32);
}

template <int RI, int CJ>
FPCORE_TARGET_AVX512 void tile_512(const float* buf, int64_t S, int64_t i0, int64_t j0, int64_t n, float* spill,
                                   int mode, int64_t T, double* out) {
    constexpr int W = 16, NP = RI * CJ;
    alignas(64) float local[2 * NP * W];
    float* acc = spill != nullptr ? spill : local;  // block-level lanes: (dot, l2sq) of pair r * CJ + c
    if (!(mode & kLoad)) std::memset(acc, 0, sizeof(local));
    const float* xi = buf + i0 * S;
    const float* xj = buf + j0 * S;
    for (int64_t k0 = 0; k0 < n; k0 += kSubTile512) {
        const int64_t ke = std::min(n, k0 + kSubTile512);
        __m512 g[RI][CJ], l[RI][CJ];
#pragma GCC unroll 8
        for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
            for (int c = 0; c < CJ; ++c) g[r][c] = l[r][c] = _mm512_setzero_ps();
        }
        for (int64_t k = k0; k < ke; k += W) {
            __m512 a[RI], b[CJ];
#pragma GCC unroll 8
            for (int r = 0; r < RI; ++r) a[r] = _mm512_load_ps(xi + r * S + k);
#pragma GCC unroll 8
            for (int c = 0; c < CJ; ++c) b[c] = _mm512_load_ps(xj + c * S + k);
#pragma GCC unroll 8
            for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
                for (int c = 0; c < CJ; ++c) {
                    const __m512 d = _mm512_sub_ps(a[r], b[c]);
                    l[r][c] = _mm512_fmadd_ps(d, d, l[r][c]);
                    g[r][c] = _mm512_fmadd_ps(a[r], b[c], g[r][c]);
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
            for (int c = 0; c < CJ; ++c) {
                float* q = acc + 2 * (r * CJ + c) * W;
                _mm512_store_ps(q, _mm512_add_ps(_mm512_load_ps(q), g[r][c]));
                _mm512_store_ps(q + W, _mm512_add_ps(_mm512_load_ps(q + W), l[r][c]));
            }
        }
    }
    if (mode & kStore) return;
    for (int r = 0; r < RI; ++r) {
        for (int c = 0; c < CJ; ++c) {
            const int64_t i = i0 + r, j = j0 + c;
            if (i <= j && j < T) {
                const float* q = acc + 2 * (r * CJ + c) * W;
                const int64_t p = pair_index(i, j, T);
                out[2 * p] = hsum_512(_mm512_load_ps(q));
                out[2 * p + 1] = hsum_512(_mm512_load_ps(q + W));
            }
        }
    }
}

// --- AVX2 -------------------------------------------------------------------------------------------------

template <DType T>
FPCORE_TARGET_AVX2 void conv_256(const void* p, int64_t off, int64_t len, float* dst) {
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
        __m256 a, b;
        ld2_256<T>(p, off + i, a, b);
        _mm256_store_ps(dst + i, a);
        _mm256_store_ps(dst + i + 8, b);
    }
    if (i < len) tail_to_f32(p, T, off + i, len - i, dst + i, 16);
}

template <int RI, int CJ>
FPCORE_TARGET_AVX2 void tile_256(const float* buf, int64_t S, int64_t i0, int64_t j0, int64_t n, float* spill, int mode,
                                 int64_t T, double* out) {
    constexpr int W = 8, NP = RI * CJ;
    alignas(32) float local[2 * NP * W];
    float* acc = spill != nullptr ? spill : local;  // block-level lanes: (dot, l2sq) of pair r * CJ + c
    if (!(mode & kLoad)) std::memset(acc, 0, sizeof(local));
    const float* xi = buf + i0 * S;
    const float* xj = buf + j0 * S;
    for (int64_t k0 = 0; k0 < n; k0 += kSubTile256) {
        const int64_t ke = std::min(n, k0 + kSubTile256);
        __m256 g[RI][CJ], l[RI][CJ];
#pragma GCC unroll 8
        for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
            for (int c = 0; c < CJ; ++c) g[r][c] = l[r][c] = _mm256_setzero_ps();
        }
        for (int64_t k = k0; k < ke; k += W) {
            __m256 a[RI], b[CJ];
#pragma GCC unroll 8
            for (int r = 0; r < RI; ++r) a[r] = _mm256_load_ps(xi + r * S + k);
#pragma GCC unroll 8
            for (int c = 0; c < CJ; ++c) b[c] = _mm256_load_ps(xj + c * S + k);
#pragma GCC unroll 8
            for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
                for (int c = 0; c < CJ; ++c) {
                    const __m256 d = _mm256_sub_ps(a[r], b[c]);
                    l[r][c] = _mm256_fmadd_ps(d, d, l[r][c]);
                    g[r][c] = _mm256_fmadd_ps(a[r], b[c], g[r][c]);
                }
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
            for (int c = 0; c < CJ; ++c) {
                float* q = acc + 2 * (r * CJ + c) * W;
                _mm256_store_ps(q, _mm256_add_ps(_mm256_load_ps(q), g[r][c]));
                _mm256_store_ps(q + W, _mm256_add_ps(_mm256_load_ps(q + W), l[r][c]));
            }
        }
    }
    if (mode & kStore) return;
    for (int r = 0; r < RI; ++r) {
        for (int c = 0; c < CJ; ++c) {
            const int64_t i = i0 + r, j = j0 + c;
            if (i <= j && j < T) {
                const float* q = acc + 2 * (r * CJ + c) * W;
                const int64_t p = pair_index(i, j, T);
                out[2 * p] = hsum_256(_mm256_load_ps(q));
                out[2 * p + 1] = hsum_256(_mm256_load_ps(q + W));
            }
        }
    }
}

// --- Scalar -----------------------------------------------------------------------------------------------

template <DType T>
void conv_scalar(const void* p, int64_t off, int64_t len, float* dst) {
    int64_t i = 0;
    for (; i + kScalarLanes <= len; i += kScalarLanes) load_lanes<T>(p, off + i, dst + i);
    if (i < len) tail_to_f32(p, T, off + i, len - i, dst + i, kScalarLanes);
}

template <int RI, int CJ>
void tile_scalar(const float* buf, int64_t S, int64_t i0, int64_t j0, int64_t n, float* spill, int mode, int64_t T,
                 double* out) {
    constexpr int W = kScalarLanes, NP = RI * CJ;
    float local[2 * NP * W];
    float* acc = spill != nullptr ? spill : local;  // block-level lanes: (dot, l2sq) of pair r * CJ + c
    if (!(mode & kLoad)) std::memset(acc, 0, sizeof(local));
    for (int64_t k0 = 0; k0 < n; k0 += kSubScalar) {
        const int64_t ke = std::min(n, k0 + kSubScalar);
        float g[NP][W] = {}, l[NP][W] = {};
        for (int64_t k = k0; k < ke; k += W) {
            for (int r = 0; r < RI; ++r) {
                const float* a = buf + (i0 + r) * S + k;
                for (int c = 0; c < CJ; ++c) {
                    const float* b = buf + (j0 + c) * S + k;
                    for (int w = 0; w < W; ++w) {
                        const float d = a[w] - b[w];
                        l[r * CJ + c][w] += d * d;
                        g[r * CJ + c][w] += a[w] * b[w];
                    }
                }
            }
        }
        for (int q = 0; q < NP; ++q) {
            for (int w = 0; w < W; ++w) {
                acc[2 * q * W + w] += g[q][w];
                acc[(2 * q + 1) * W + w] += l[q][w];
            }
        }
    }
    if (mode & kStore) return;
    for (int r = 0; r < RI; ++r) {
        for (int c = 0; c < CJ; ++c) {
            const int64_t i = i0 + r, j = j0 + c;
            if (i <= j && j < T) {
                const float* q = acc + 2 * (r * CJ + c) * W;
                const int64_t p = pair_index(i, j, T);
                out[2 * p] = lanes_sum(q);
                out[2 * p + 1] = lanes_sum(q + W);
            }
        }
    }
}

struct AllLevel {
    int ri, cj;  // tile shape (both divide 4)
    int lanes;   // floats per accumulator
    int step;    // conversion granularity (elements)
    TileFn tile;
};

AllLevel all_level(Simd level) {
    switch (level) {
        case Simd::Avx512: return {4, 2, 16, 32, &tile_512<4, 2>};
        case Simd::Avx2: return {2, 2, 8, 16, &tile_256<2, 2>};
        case Simd::Scalar: break;
    }
    return {2, 2, kScalarLanes, kScalarLanes, &tile_scalar<2, 2>};
}

ConvFn pick_conv(Simd level, DType t, bool eo) {
    return with_dtype(t, [&](auto X) -> ConvFn {
        constexpr DType A = decltype(X)::value;
        switch (level) {
            case Simd::Avx512:
                if constexpr (A == DType::BF16) {
                    if (eo) return &conv_512<A, true>;
                }
                return &conv_512<A, false>;
            case Simd::Avx2: return &conv_256<A>;
            case Simd::Scalar: break;
        }
        return &conv_scalar<A>;
    });
}

// trajectory_all sub-chunk S: at most kAllSubMax elements, so that a tile's 6 rows (24 KB at S = 1024, 12 KB
// at 512) stay in L1 while it runs; and T x S floats within kAllBufferBytes (about half of one core's L2).
// Measured (2 threads, bf16, G pair-elements/s): T=16: S=4096 30, 1024 33, 512 38, 256 42; T=64: 48 / 54 /
// 54 / 53; T=256: 55-59 for S = 512..4096 (the compute peak is ~64).
constexpr int64_t kAllSubMax = 512;
constexpr int64_t kAllBufferBytes = int64_t{1} << 20;

// Prefetches a block's rows of all T checkpoints, a share of the lines at each call to next().
class RowsPrefetcher {
   public:
    RowsPrefetcher(const Span* ckpt, int64_t T, int64_t nt, const Block* bl, int64_t calls)
        : ckpt_(ckpt), T_(T), nt_(nt), bl_(bl) {
        if (bl_ == nullptr) return;
        int64_t lines = 0;
        for (int64_t t = 0; t < T; ++t) lines += row_lines(t);
        per_call_ = (lines + calls - 1) / std::max<int64_t>(calls, 1);
    }
    void next() {
        for (int64_t k = 0; k < per_call_ && bl_ != nullptr && t_ < T_; ++k) {
            const Span& s = ckpt_[t_ * nt_ + bl_->tensor];
            _mm_prefetch(static_cast<const char*>(s.ptr) + bl_->off * dtype_size(s.t) + line_ * 64, _MM_HINT_T2);
            if (++line_ >= row_lines(t_)) {
                line_ = 0;
                ++t_;
            }
        }
    }

   private:
    int64_t row_lines(int64_t t) const { return (bl_->len * dtype_size(ckpt_[t * nt_ + bl_->tensor].t) + 63) / 64; }
    const Span* ckpt_;
    int64_t T_, nt_;
    const Block* bl_;
    int64_t per_call_ = 0, t_ = 0, line_ = 0;
};

// trajectory_consecutive prefetches the checkpoint block it will visit this many visits later (visits go
// (block b, t = 0..T-1), then block b + 1). Measured on the target (T=16 x 64 MB bf16, 2 threads): no
// prefetch ~0.55x of the read roofline; distance 1..4 into L2 all ~0.8-0.9x (2 slightly best); into L1 worse.
constexpr int64_t kPrefetchVisits = 2;

}  // namespace

void trajectory_consecutive(const Span* ckpt, int64_t T, int64_t ntensors, double* norm2, double* dot, double* l1,
                            double* l2sq, double* linf) {
    if (T <= 0) return;
    const int64_t nt = ntensors;
    const Simd level = simd_active();
    const std::vector<char> eo = all_bf16(ckpt, T, nt);
    std::vector<StepFn> fns(static_cast<size_t>(T * nt));
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < nt; ++i) {
            const DType dt = ckpt[t * nt + i].t;
            fns[t * nt + i] = t == 0 ? pick_step<false>(level, dt, eo[i]) : pick_step<true>(level, dt, eo[i]);
        }
    }
    // Partials of a block: norm2[t] at t, then (dot, l1, l2sq) of pair t at T + 3t, then linf of pair t.
    const int64_t npair = T - 1;
    const int64_t nsum = T + 3 * npair, K = nsum + npair;
    const std::vector<Block> blocks = make_blocks(ckpt, nt);
    const int64_t nb = static_cast<int64_t>(blocks.size());
    std::vector<double> res(static_cast<size_t>(K));
    fold_blocks(
        nb, K, nsum, std::max<int64_t>(1, 16 / T), res.data(), [] { return FloatBuf(kBlock + 32); },
        [&](int64_t b, double* out, FloatBuf& buf) {
            const Block& bl = blocks[b];
            for (int64_t t = 0; t < T; ++t) {
                const int64_t s = t * nt + bl.tensor;
                Prefetcher pf;  // the visit kPrefetchVisits later: (block b, t + k) or on into block b + 1
                pf.p = static_cast<const char*>(ckpt[s].ptr) + bl.off * dtype_size(ckpt[s].t);
                const int64_t v = t + kPrefetchVisits, pb = b + v / T;
                if (pb < nb) {
                    const Span& ns = ckpt[(v % T) * nt + blocks[pb].tensor];
                    pf.p = static_cast<const char*>(ns.ptr) + blocks[pb].off * dtype_size(ns.t);
                    pf.stride = 64 * std::max<int64_t>(1, dtype_size(ns.t) / dtype_size(ckpt[s].t));
                }
                double o[5];
                fns[s](ckpt[s].ptr, bl.off, bl.len, buf.get(), o, pf);
                out[t] = o[0];
                if (t > 0) {
                    out[T + 3 * (t - 1)] = o[1];
                    out[T + 3 * (t - 1) + 1] = o[2];
                    out[T + 3 * (t - 1) + 2] = o[3];
                    out[nsum + t - 1] = o[4];
                }
            }
        });
    for (int64_t t = 0; t < T; ++t) norm2[t] = res[t];
    for (int64_t t = 0; t < npair; ++t) {
        dot[t] = res[T + 3 * t];
        l1[t] = res[T + 3 * t + 1];
        l2sq[t] = res[T + 3 * t + 2];
        linf[t] = std::isnan(l2sq[t]) ? l2sq[t] : res[nsum + t];
    }
}

void trajectory_all(const Span* ckpt, int64_t T, int64_t ntensors, double* dot, double* l2sq) {
    if (T <= 0) return;
    const int64_t nt = ntensors;
    const Simd level = simd_active();
    const AllLevel lv = all_level(level);
    const std::vector<char> eo = all_bf16(ckpt, T, nt);
    std::vector<ConvFn> convs(static_cast<size_t>(T * nt));
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = 0; i < nt; ++i) convs[t * nt + i] = pick_conv(level, ckpt[t * nt + i].t, eo[i]);
    }
    const int64_t Tpad = (T + 3) / 4 * 4;
    int64_t S = kAllSubMax;  // sub-chunk: a power of two >= 256, so sub-chunks are whole sub-blocks
    while (S > 256 && Tpad * S * static_cast<int64_t>(sizeof(float)) > kAllBufferBytes) S /= 2;
    int64_t ntiles = 0;
    for (int64_t i0 = 0; i0 < T; i0 += lv.ri) {
        for (int64_t j0 = i0 / lv.cj * lv.cj; j0 < T; j0 += lv.cj) ++ntiles;
    }
    const int64_t tile_floats = 2 * lv.ri * lv.cj * lv.lanes;
    const int64_t K = T * (T + 1);  // (dot, l2sq) of each pair i <= j
    const std::vector<Block> blocks = make_blocks(ckpt, nt);
    const int64_t nb = static_cast<int64_t>(blocks.size());
    struct Scratch {
        FloatBuf buf, spill;
    };
    std::vector<double> res(static_cast<size_t>(K));
    fold_blocks(
        nb, K, K, std::max<int64_t>(1, 16 / (T * T)), res.data(),
        [&] { return Scratch{FloatBuf(Tpad * S), S < kBlock ? FloatBuf(ntiles * tile_floats) : FloatBuf()}; },
        [&](int64_t b, double* out, Scratch& s) {
            const Block& bl = blocks[b];
            const int64_t nsub = (bl.len + S - 1) / S;
            // The next block's rows stream into L2 while this block's tiles compute.
            RowsPrefetcher pf(ckpt, T, nt, b + 1 < nb ? &blocks[b + 1] : nullptr, nsub * ntiles);
            for (int64_t sub = 0; sub < nsub; ++sub) {
                const int64_t s0 = sub * S, slen = std::min(S, bl.len - s0);
                const int64_t n = (slen + lv.step - 1) / lv.step * lv.step;
                for (int64_t t = 0; t < T; ++t) {
                    const int64_t q = t * nt + bl.tensor;
                    convs[q](ckpt[q].ptr, bl.off + s0, slen, s.buf.get() + t * S);
                }
                const int mode = (sub > 0 ? kLoad : 0) | (sub + 1 < nsub ? kStore : 0);
                int64_t idx = 0;
                for (int64_t i0 = 0; i0 < T; i0 += lv.ri) {
                    for (int64_t j0 = i0 / lv.cj * lv.cj; j0 < T; j0 += lv.cj, ++idx) {
                        pf.next();
                        float* spill = nsub > 1 ? s.spill.get() + idx * tile_floats : nullptr;
                        lv.tile(s.buf.get(), S, i0, j0, n, spill, mode, T, out);
                    }
                }
            }
        });
    for (int64_t i = 0; i < T; ++i) {
        for (int64_t j = i; j < T; ++j) {
            const int64_t q = pair_index(i, j, T);
            dot[i * T + j] = dot[j * T + i] = res[2 * q];
            l2sq[i * T + j] = l2sq[j * T + i] = i == j ? 0.0 : res[2 * q + 1];
        }
    }
}

}  // namespace kernels
}  // namespace fpcore
