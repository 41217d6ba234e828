// pair_stats: dot, |x|^2, |y|^2, l1, l2^2, linf of two vectors in one pass (memory bound; each input is
// software-prefetched kStreamAhead bytes ahead into L2).
//
// Numerics of the reduction family (the spec; fpcore/backends/reference/pair_stats.py is the fp64 oracle):
//  * A vector is a list of tensors. Each tensor is cut into blocks of kBlock = 4096 elements (the last block
//    of a tensor may be shorter); block boundaries restart at every tensor and never depend on the thread
//    count or the SIMD level.
//  * Inside a block every metric is accumulated in fp32 lanes (avx512: 2 sets x 16 lanes, 32 elements a step;
//    avx2: 2 sets x 8 lanes; scalar: 16 lanes; trajectory_all: one 16 / 8 / 16-lane set per pair), in two
//    levels: a sub-block of 16 steps is summed per lane from zero, then its lanes are added in fp32 into the
//    block's lane accumulators (avx512/avx2 first add their two sets). Each lane's chain of fp32 roundings is
//    thus 16 + 8..32 deep instead of 128..512, for a few adds per sub-block (worst relative error seen on
//    single 4096-element blocks vs the fp64 oracle: 2.6e-7 for sums of positive terms, typically ~5e-8).
//    Products are fused (FMA, one rounding) on avx2/avx512 and multiply-then-add on scalar. Differences are
//    rounded to fp32: d = f32(x) - f32(y).
//  * The elements of a block past its last full SIMD step are converted to a zero-padded fp32 scratch and
//    run through the same step (zeros add nothing).
//  * At the end of a block each lane is widened to fp64 and the lanes are summed in fp64 in a fixed order:
//    that is the block partial. Block partials are summed in fp64 in block order.
//  * Threads compute block partials independently into a buffer; a fold in block order follows (per round of
//    blocks, see fold_blocks). So the result is bit-identical for any number of threads. Each SIMD level is
//    deterministic; levels differ only in the last bits (lane association, FMA).
//  * linf = max |d|. Max instructions drop NaN operands, so linf is set to NaN at the end whenever l2sq is
//    NaN (sum of squares of fp32 differences is NaN iff some difference is NaN).
//  * bf16 on avx512: when every operand of a tensor is bf16 (the usual case), a 64-byte load of 32 elements
//    is widened as (v << 16) -> even elements and (v & 0xFFFF0000) -> odd elements: two instructions for
//    32 elements and no shuffle. This permuted lane order is used by every operand of that tensor alike (and
//    by the fp32 copies the trajectory kernels keep), so element k of x still meets element k of y. Mixed
//    dtypes use the natural order (simd::load16).
#include "reduce_common.h"

namespace fpcore {
namespace kernels {

namespace {

using namespace reduce;

// One block: out = {dot, xx, yy, l1, l2sq, linf} of elements off .. off+len-1.
using PairFn = void (*)(const void* xp, const void* yp, int64_t off, int64_t len, double* out);

// --- AVX-512 ----------------------------------------------------------------------------------------------

struct PairSum512 {
    __m512 dot, xx, yy, l1, l2;
};

FPCORE_TARGET_AVX512 static inline void pair_zero_512(PairSum512& a) {
    a.dot = a.xx = a.yy = a.l1 = a.l2 = _mm512_setzero_ps();
}

FPCORE_TARGET_AVX512 static inline void pair_step_512(PairSum512& a, __m512& mx, __m512 x, __m512 y) {
    const __m512 d = _mm512_sub_ps(x, y);
    const __m512 ad = _mm512_abs_ps(d);
    a.dot = _mm512_fmadd_ps(x, y, a.dot);
    a.xx = _mm512_fmadd_ps(x, x, a.xx);
    a.yy = _mm512_fmadd_ps(y, y, a.yy);
    a.l2 = _mm512_fmadd_ps(d, d, a.l2);
    a.l1 = _mm512_add_ps(a.l1, ad);
    mx = _mm512_max_ps(mx, ad);
}

// acc += s0 + s1 (end of a sub-block).
FPCORE_TARGET_AVX512 static inline void pair_fold_512(PairSum512& acc, const PairSum512& s0, const PairSum512& s1) {
    acc.dot = _mm512_add_ps(acc.dot, _mm512_add_ps(s0.dot, s1.dot));
    acc.xx = _mm512_add_ps(acc.xx, _mm512_add_ps(s0.xx, s1.xx));
    acc.yy = _mm512_add_ps(acc.yy, _mm512_add_ps(s0.yy, s1.yy));
    acc.l1 = _mm512_add_ps(acc.l1, _mm512_add_ps(s0.l1, s1.l1));
    acc.l2 = _mm512_add_ps(acc.l2, _mm512_add_ps(s0.l2, s1.l2));
}

template <DType TX, DType TY, bool EO>
FPCORE_TARGET_AVX512 void pair_block_512(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairSum512 acc;
    pair_zero_512(acc);
    __m512 mx0 = _mm512_setzero_ps(), mx1 = _mm512_setzero_ps();
    for (int64_t c0 = 0; c0 < len; c0 += kSub512) {
        const int64_t ce = std::min(len, c0 + kSub512);
        PairSum512 s0, s1;
        pair_zero_512(s0);
        pair_zero_512(s1);
        int64_t i = c0;
        for (; i + 32 <= ce; i += 32) {
            prefetch_ahead<TX, 32>(xp, off + i);
            prefetch_ahead<TY, 32>(yp, off + i);
            __m512 x0, x1, y0, y1;
            ld2_512<TX, EO>(xp, off + i, x0, x1);
            ld2_512<TY, EO>(yp, off + i, y0, y1);
            pair_step_512(s0, mx0, x0, y0);
            pair_step_512(s1, mx1, x1, y1);
        }
        if (i < ce) {
            alignas(64) float tx[32], ty[32];
            tail_to_f32(xp, TX, off + i, ce - i, tx, 32);
            tail_to_f32(yp, TY, off + i, ce - i, ty, 32);
            __m512 x0, x1, y0, y1;
            ld2_512<DType::F32, false>(tx, 0, x0, x1);
            ld2_512<DType::F32, false>(ty, 0, y0, y1);
            pair_step_512(s0, mx0, x0, y0);
            pair_step_512(s1, mx1, x1, y1);
        }
        pair_fold_512(acc, s0, s1);
    }
    out[0] = hsum_512(acc.dot);
    out[1] = hsum_512(acc.xx);
    out[2] = hsum_512(acc.yy);
    out[3] = hsum_512(acc.l1);
    out[4] = hsum_512(acc.l2);
    out[5] = hmax2_512(mx0, mx1);
}

// --- AVX2 -------------------------------------------------------------------------------------------------

struct PairSum256 {
    __m256 dot, xx, yy, l1, l2;
};

FPCORE_TARGET_AVX2 static inline void pair_zero_256(PairSum256& a) {
    a.dot = a.xx = a.yy = a.l1 = a.l2 = _mm256_setzero_ps();
}

FPCORE_TARGET_AVX2 static inline void pair_step_256(PairSum256& a, __m256& mx, __m256 x, __m256 y) {
    const __m256 d = _mm256_sub_ps(x, y);
    const __m256 ad = abs_256(d);
    a.dot = _mm256_fmadd_ps(x, y, a.dot);
    a.xx = _mm256_fmadd_ps(x, x, a.xx);
    a.yy = _mm256_fmadd_ps(y, y, a.yy);
    a.l2 = _mm256_fmadd_ps(d, d, a.l2);
    a.l1 = _mm256_add_ps(a.l1, ad);
    mx = _mm256_max_ps(mx, ad);
}

FPCORE_TARGET_AVX2 static inline void pair_fold_256(PairSum256& acc, const PairSum256& s0, const PairSum256& s1) {
    acc.dot = _mm256_add_ps(acc.dot, _mm256_add_ps(s0.dot, s1.dot));
    acc.xx = _mm256_add_ps(acc.xx, _mm256_add_ps(s0.xx, s1.xx));
    acc.yy = _mm256_add_ps(acc.yy, _mm256_add_ps(s0.yy, s1.yy));
    acc.l1 = _mm256_add_ps(acc.l1, _mm256_add_ps(s0.l1, s1.l1));
    acc.l2 = _mm256_add_ps(acc.l2, _mm256_add_ps(s0.l2, s1.l2));
}

template <DType TX, DType TY>
FPCORE_TARGET_AVX2 void pair_block_256(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairSum256 acc;
    pair_zero_256(acc);
    __m256 mx0 = _mm256_setzero_ps(), mx1 = _mm256_setzero_ps();
    for (int64_t c0 = 0; c0 < len; c0 += kSub256) {
        const int64_t ce = std::min(len, c0 + kSub256);
        PairSum256 s0, s1;
        pair_zero_256(s0);
        pair_zero_256(s1);
        int64_t i = c0;
        for (; i + 16 <= ce; i += 16) {
            prefetch_ahead<TX, 16>(xp, off + i);
            prefetch_ahead<TY, 16>(yp, off + i);
            __m256 x0, x1, y0, y1;
            ld2_256<TX>(xp, off + i, x0, x1);
            ld2_256<TY>(yp, off + i, y0, y1);
            pair_step_256(s0, mx0, x0, y0);
            pair_step_256(s1, mx1, x1, y1);
        }
        if (i < ce) {
            alignas(32) float tx[16], ty[16];
            tail_to_f32(xp, TX, off + i, ce - i, tx, 16);
            tail_to_f32(yp, TY, off + i, ce - i, ty, 16);
            __m256 x0, x1, y0, y1;
            ld2_256<DType::F32>(tx, 0, x0, x1);
            ld2_256<DType::F32>(ty, 0, y0, y1);
            pair_step_256(s0, mx0, x0, y0);
            pair_step_256(s1, mx1, x1, y1);
        }
        pair_fold_256(acc, s0, s1);
    }
    out[0] = hsum_256(acc.dot);
    out[1] = hsum_256(acc.xx);
    out[2] = hsum_256(acc.yy);
    out[3] = hsum_256(acc.l1);
    out[4] = hsum_256(acc.l2);
    out[5] = hmax2_256(mx0, mx1);
}

// --- Scalar -----------------------------------------------------------------------------------------------

struct PairSumS {
    float dot[kScalarLanes], xx[kScalarLanes], yy[kScalarLanes], l1[kScalarLanes], l2[kScalarLanes];
};

static inline void pair_step_scalar(PairSumS& a, float* mx, const float* x, const float* y) {
    for (int l = 0; l < kScalarLanes; ++l) {
        const float d = x[l] - y[l];
        const float ad = std::fabs(d);
        a.dot[l] += x[l] * y[l];
        a.xx[l] += x[l] * x[l];
        a.yy[l] += y[l] * y[l];
        a.l2[l] += d * d;
        a.l1[l] += ad;
        mx[l] = ad > mx[l] ? ad : mx[l];
    }
}

static inline void pair_fold_scalar(PairSumS& acc, const PairSumS& s) {
    for (int l = 0; l < kScalarLanes; ++l) {
        acc.dot[l] += s.dot[l];
        acc.xx[l] += s.xx[l];
        acc.yy[l] += s.yy[l];
        acc.l1[l] += s.l1[l];
        acc.l2[l] += s.l2[l];
    }
}

template <DType TX, DType TY>
void pair_block_scalar(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairSumS acc = {};
    float mx[kScalarLanes] = {};
    float x[kScalarLanes], y[kScalarLanes];
    for (int64_t c0 = 0; c0 < len; c0 += kSubScalar) {
        const int64_t ce = std::min(len, c0 + kSubScalar);
        PairSumS s = {};
        int64_t i = c0;
        for (; i + kScalarLanes <= ce; i += kScalarLanes) {
            load_lanes<TX>(xp, off + i, x);
            load_lanes<TY>(yp, off + i, y);
            pair_step_scalar(s, mx, x, y);
        }
        if (i < ce) {
            tail_to_f32(xp, TX, off + i, ce - i, x, kScalarLanes);
            tail_to_f32(yp, TY, off + i, ce - i, y, kScalarLanes);
            pair_step_scalar(s, mx, x, y);
        }
        pair_fold_scalar(acc, s);
    }
    out[0] = lanes_sum(acc.dot);
    out[1] = lanes_sum(acc.xx);
    out[2] = lanes_sum(acc.yy);
    out[3] = lanes_sum(acc.l1);
    out[4] = lanes_sum(acc.l2);
    out[5] = lanes_max(mx);
}

// --- Dispatch ---------------------------------------------------------------------------------------------

PairFn pick_pair(Simd level, DType tx, DType ty) {
    return with_dtype(tx, [&](auto X) {
        return with_dtype(ty, [&](auto Y) -> PairFn {
            constexpr DType A = decltype(X)::value, B = decltype(Y)::value;
            switch (level) {
                case Simd::Avx512:
                    if constexpr (A == DType::BF16 && B == DType::BF16) return &pair_block_512<A, B, true>;
                    return &pair_block_512<A, B, false>;
                case Simd::Avx2: return &pair_block_256<A, B>;
                case Simd::Scalar: break;
            }
            return &pair_block_scalar<A, B>;
        });
    });
}

}  // namespace

PairSums pair_stats(const Span* x, const Span* y, int64_t ntensors) {
    PairSums r{0, 0, 0, 0, 0, 0, 0};
    const Simd level = simd_active();
    std::vector<PairFn> fns(static_cast<size_t>(ntensors));
    for (int64_t i = 0; i < ntensors; ++i) {
        fns[i] = pick_pair(level, x[i].t, y[i].t);
        r.n += x[i].n;
    }
    const std::vector<Block> blocks = make_blocks(x, ntensors);
    double res[6];
    fold_blocks(
        static_cast<int64_t>(blocks.size()), 6, 5, 16, res, [] { return NoScratch{}; },
        [&](int64_t b, double* out, NoScratch&) {
            const Block& bl = blocks[b];
            fns[bl.tensor](x[bl.tensor].ptr, y[bl.tensor].ptr, bl.off, bl.len, out);
        });
    r.dot = res[0];
    r.xx = res[1];
    r.yy = res[2];
    r.l1 = res[3];
    r.l2sq = res[4];
    r.linf = std::isnan(res[4]) ? res[4] : res[5];
    return r;
}

}  // namespace kernels
}  // namespace fpcore
