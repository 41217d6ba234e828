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

// One step of the pair kernel at level Isa (EO: the bf16 even/odd lane order for full steps).
template <class Isa, bool EO>
struct PairKernel {
    using V = typename Isa::V;
    Sums<Isa, 5, 1> sums;  // dot, xx, yy, l1, l2; max |d|

    template <bool FULL, DType TX, DType TY>
    void step(const void* const* p, int64_t j, int64_t) {
        if constexpr (FULL) {
            Isa::template prefetch<TX>(p[0], j);
            Isa::template prefetch<TY>(p[1], j);
        }
        V x[Isa::kSets], y[Isa::kSets];
        Isa::template load<TX, EO && FULL>(p[0], j, x);
        Isa::template load<TY, EO && FULL>(p[1], j, y);
        for (int h = 0; h < Isa::kSets; ++h) {
            V* a = sums.sub[h];
            V d, ad;
            Isa::sub(d, x[h], y[h]);
            Isa::abs(ad, d);
            Isa::fmadd(a[0], x[h], y[h]);
            Isa::fmadd(a[1], x[h], x[h]);
            Isa::fmadd(a[2], y[h], y[h]);
            Isa::fmadd(a[4], d, d);
            Isa::add(a[3], a[3], ad);
            Isa::max(sums.mx[0][h], ad);
        }
    }
};

template <class Isa, bool EO, DType TX, DType TY>
static inline void pair_block(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairKernel<Isa, EO> k;
    const void* p[2] = {xp, yp};
    run_block<Isa, TX, TY>(k, p, off, len, out);
}

// Per-level entry points: the level's target, everything inlined into them.
template <DType TX, DType TY, bool EO>
FPCORE_TARGET_AVX512 FPCORE_FLATTEN void pair_block_512(const void* xp, const void* yp, int64_t off, int64_t len,
                                                        double* out) {
    pair_block<Avx512, EO, TX, TY>(xp, yp, off, len, out);
}

template <DType TX, DType TY>
FPCORE_TARGET_AVX2 FPCORE_FLATTEN void pair_block_256(const void* xp, const void* yp, int64_t off, int64_t len,
                                                      double* out) {
    pair_block<Avx2, false, TX, TY>(xp, yp, off, len, out);
}

template <DType TX, DType TY>
FPCORE_FLATTEN void pair_block_scalar(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    pair_block<Scalar, false, TX, TY>(xp, yp, off, len, out);
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
