// triple_stats: d = x - y, e = z - y; <d,z>, |d|^2, |z|^2, |e|^2 in one pass over three vectors (memory
// bound; each input is software-prefetched kStreamAhead bytes ahead into L2).
//
// Numerics: see the top of pair_stats.cpp (fp32 lanes inside blocks of kBlock elements, fp64 partials folded
// in block order, identical for any thread count). d and e are rounded to fp32.
#include "reduce_common.h"

namespace fpcore {
namespace kernels {

namespace {

using namespace reduce;

// One block: out = {dz, dd, zz, ee} of elements off .. off+len-1.
using TripleFn = void (*)(const void* xp, const void* yp, const void* zp, int64_t off, int64_t len, double* out);

// One step of the triple kernel at level Isa (EO: the bf16 even/odd lane order for full steps).
template <class Isa, bool EO>
struct TripleKernel {
    using V = typename Isa::V;
    Sums<Isa, 4, 0> sums;  // dz, dd, zz, ee

    template <bool FULL, DType TX, DType TY, DType TZ>
    void step(const void* const* p, int64_t j, int64_t) {
        if constexpr (FULL) {
            Isa::template prefetch<TX>(p[0], j);
            Isa::template prefetch<TY>(p[1], j);
            Isa::template prefetch<TZ>(p[2], j);
        }
        V x[Isa::kSets], y[Isa::kSets], z[Isa::kSets];
        Isa::template load<TX, EO && FULL>(p[0], j, x);
        Isa::template load<TY, EO && FULL>(p[1], j, y);
        Isa::template load<TZ, EO && FULL>(p[2], j, z);
        for (int h = 0; h < Isa::kSets; ++h) {
            V* a = sums.sub[h];
            V d, e;
            Isa::sub(d, x[h], y[h]);
            Isa::sub(e, z[h], y[h]);
            Isa::fmadd(a[0], d, z[h]);
            Isa::fmadd(a[1], d, d);
            Isa::fmadd(a[2], z[h], z[h]);
            Isa::fmadd(a[3], e, e);
        }
    }
};

template <class Isa, bool EO, DType TX, DType TY, DType TZ>
static inline void triple_block(const void* xp, const void* yp, const void* zp, int64_t off, int64_t len, double* out) {
    TripleKernel<Isa, EO> k;
    const void* p[3] = {xp, yp, zp};
    run_block<Isa, TX, TY, TZ>(k, p, off, len, out);
}

// Per-level entry points: the level's target, everything inlined into them.
template <DType TX, DType TY, DType TZ, bool EO>
FPCORE_TARGET_AVX512 FPCORE_FLATTEN void triple_block_512(const void* xp, const void* yp, const void* zp, int64_t off,
                                                          int64_t len, double* out) {
    triple_block<Avx512, EO, TX, TY, TZ>(xp, yp, zp, off, len, out);
}

template <DType TX, DType TY, DType TZ>
FPCORE_TARGET_AVX2 FPCORE_FLATTEN void triple_block_256(const void* xp, const void* yp, const void* zp, int64_t off,
                                                        int64_t len, double* out) {
    triple_block<Avx2, false, TX, TY, TZ>(xp, yp, zp, off, len, out);
}

template <DType TX, DType TY, DType TZ>
FPCORE_FLATTEN void triple_block_scalar(const void* xp, const void* yp, const void* zp, int64_t off, int64_t len,
                                        double* out) {
    triple_block<Scalar, false, TX, TY, TZ>(xp, yp, zp, off, len, out);
}

// --- Dispatch ---------------------------------------------------------------------------------------------

TripleFn pick_triple(Simd level, DType tx, DType ty, DType tz) {
    return with_dtype(tx, [&](auto X) {
        return with_dtype(ty, [&](auto Y) {
            return with_dtype(tz, [&](auto Z) -> TripleFn {
                constexpr DType A = decltype(X)::value, B = decltype(Y)::value, C = decltype(Z)::value;
                switch (level) {
                    case Simd::Avx512:
                        if constexpr (A == DType::BF16 && B == DType::BF16 && C == DType::BF16) {
                            return &triple_block_512<A, B, C, true>;
                        }
                        return &triple_block_512<A, B, C, false>;
                    case Simd::Avx2: return &triple_block_256<A, B, C>;
                    case Simd::Scalar: break;
                }
                return &triple_block_scalar<A, B, C>;
            });
        });
    });
}

}  // namespace

TripleSums triple_stats(const Span* x, const Span* y, const Span* z, int64_t ntensors) {
    TripleSums r{0, 0, 0, 0, 0};
    const Simd level = simd_active();
    std::vector<TripleFn> fns(static_cast<size_t>(ntensors));
    for (int64_t i = 0; i < ntensors; ++i) {
        fns[i] = pick_triple(level, x[i].t, y[i].t, z[i].t);
        r.n += x[i].n;
    }
    const std::vector<Block> blocks = make_blocks(x, ntensors);
    double res[4];
    fold_blocks(
        static_cast<int64_t>(blocks.size()), 4, 4, 16, res, [] { return NoScratch{}; },
        [&](int64_t b, double* out, NoScratch&) {
            const Block& bl = blocks[b];
            const int64_t t = bl.tensor;
            fns[t](x[t].ptr, y[t].ptr, z[t].ptr, bl.off, bl.len, out);
        });
    r.dz = res[0];
    r.dd = res[1];
    r.zz = res[2];
    r.ee = res[3];
    return r;
}

}  // namespace kernels
}  // namespace fpcore
