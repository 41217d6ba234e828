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

// --- AVX-512 ----------------------------------------------------------------------------------------------

struct TripleSum512 {
    __m512 dz, dd, zz, ee;
};

FPCORE_TARGET_AVX512 static inline void triple_zero_512(TripleSum512& a) {
    a.dz = a.dd = a.zz = a.ee = _mm512_setzero_ps();
}

FPCORE_TARGET_AVX512 static inline void triple_step_512(TripleSum512& a, __m512 x, __m512 y, __m512 z) {
    const __m512 d = _mm512_sub_ps(x, y);
    const __m512 e = _mm512_sub_ps(z, y);
    a.dz = _mm512_fmadd_ps(d, z, a.dz);
    a.dd = _mm512_fmadd_ps(d, d, a.dd);
    a.zz = _mm512_fmadd_ps(z, z, a.zz);
    a.ee = _mm512_fmadd_ps(e, e, a.ee);
}

FPCORE_TARGET_AVX512 static inline void triple_fold_512(TripleSum512& acc, const TripleSum512& s0,
                                                        const TripleSum512& s1) {
    acc.dz = _mm512_add_ps(acc.dz, _mm512_add_ps(s0.dz, s1.dz));
    acc.dd = _mm512_add_ps(acc.dd, _mm512_add_ps(s0.dd, s1.dd));
    acc.zz = _mm512_add_ps(acc.zz, _mm512_add_ps(s0.zz, s1.zz));
    acc.ee = _mm512_add_ps(acc.ee, _mm512_add_ps(s0.ee, s1.ee));
}

template <DType TX, DType TY, DType TZ, bool EO>
FPCORE_TARGET_AVX512 void triple_block_512(const void* xp, const void* yp, const void* zp, int64_t off, int64_t len,
                                           double* out) {
    TripleSum512 acc;
    triple_zero_512(acc);
    for (int64_t c0 = 0; c0 < len; c0 += kSub512) {
        const int64_t ce = std::min(len, c0 + kSub512);
        TripleSum512 s0, s1;
        triple_zero_512(s0);
        triple_zero_512(s1);
        int64_t i = c0;
        for (; i + 32 <= ce; i += 32) {
            prefetch_ahead<TX, 32>(xp, off + i);
            prefetch_ahead<TY, 32>(yp, off + i);
            prefetch_ahead<TZ, 32>(zp, off + i);
            __m512 x0, x1, y0, y1, z0, z1;
            ld2_512<TX, EO>(xp, off + i, x0, x1);
            ld2_512<TY, EO>(yp, off + i, y0, y1);
            ld2_512<TZ, EO>(zp, off + i, z0, z1);
            triple_step_512(s0, x0, y0, z0);
            triple_step_512(s1, x1, y1, z1);
        }
        if (i < ce) {
            alignas(64) float tx[32], ty[32], tz[32];
            tail_to_f32(xp, TX, off + i, ce - i, tx, 32);
            tail_to_f32(yp, TY, off + i, ce - i, ty, 32);
            tail_to_f32(zp, TZ, off + i, ce - i, tz, 32);
            __m512 x0, x1, y0, y1, z0, z1;
            ld2_512<DType::F32, false>(tx, 0, x0, x1);
            ld2_512<DType::F32, false>(ty, 0, y0, y1);
            ld2_512<DType::F32, false>(tz, 0, z0, z1);
            triple_step_512(s0, x0, y0, z0);
            triple_step_512(s1, x1, y1, z1);
        }
        triple_fold_512(acc, s0, s1);
    }
    out[0] = hsum_512(acc.dz);
    out[1] = hsum_512(acc.dd);
    out[2] = hsum_512(acc.zz);
    out[3] = hsum_512(acc.ee);
}

// --- AVX2 -------------------------------------------------------------------------------------------------

struct TripleSum256 {
    __m256 dz, dd, zz, ee;
};

FPCORE_TARGET_AVX2 static inline void triple_zero_256(TripleSum256& a) {
    a.dz = a.dd = a.zz = a.ee = _mm256_setzero_ps();
}

FPCORE_TARGET_AVX2 static inline void triple_step_256(TripleSum256& a, __m256 x, __m256 y, __m256 z) {
    const __m256 d = _mm256_sub_ps(x, y);
    const __m256 e = _mm256_sub_ps(z, y);
    a.dz = _mm256_fmadd_ps(d, z, a.dz);
    a.dd = _mm256_fmadd_ps(d, d, a.dd);
    a.zz = _mm256_fmadd_ps(z, z, a.zz);
    a.ee = _mm256_fmadd_ps(e, e, a.ee);
}

FPCORE_TARGET_AVX2 static inline void triple_fold_256(TripleSum256& acc, const TripleSum256& s0,
                                                      const TripleSum256& s1) {
    acc.dz = _mm256_add_ps(acc.dz, _mm256_add_ps(s0.dz, s1.dz));
    acc.dd = _mm256_add_ps(acc.dd, _mm256_add_ps(s0.dd, s1.dd));
    acc.zz = _mm256_add_ps(acc.zz, _mm256_add_ps(s0.zz, s1.zz));
    acc.ee = _mm256_add_ps(acc.ee, _mm256_add_ps(s0.ee, s1.ee));
}

template <DType TX, DType TY, DType TZ>
FPCORE_TARGET_AVX2 void triple_block_256(const void* xp, const void* yp, const void* zp, int64_t off, int64_t len,
                                         double* out) {
    TripleSum256 acc;
    triple_zero_256(acc);
    for (int64_t c0 = 0; c0 < len; c0 += kSub256) {
        const int64_t ce = std::min(len, c0 + kSub256);
        TripleSum256 s0, s1;
        triple_zero_256(s0);
        triple_zero_256(s1);
        int64_t i = c0;
        for (; i + 16 <= ce; i += 16) {
            prefetch_ahead<TX, 16>(xp, off + i);
            prefetch_ahead<TY, 16>(yp, off + i);
            prefetch_ahead<TZ, 16>(zp, off + i);
            __m256 x0, x1, y0, y1, z0, z1;
            ld2_256<TX>(xp, off + i, x0, x1);
            ld2_256<TY>(yp, off + i, y0, y1);
            ld2_256<TZ>(zp, off + i, z0, z1);
            triple_step_256(s0, x0, y0, z0);
            triple_step_256(s1, x1, y1, z1);
        }
        if (i < ce) {
            alignas(32) float tx[16], ty[16], tz[16];
            tail_to_f32(xp, TX, off + i, ce - i, tx, 16);
            tail_to_f32(yp, TY, off + i, ce - i, ty, 16);
            tail_to_f32(zp, TZ, off + i, ce - i, tz, 16);
            __m256 x0, x1, y0, y1, z0, z1;
            ld2_256<DType::F32>(tx, 0, x0, x1);
            ld2_256<DType::F32>(ty, 0, y0, y1);
            ld2_256<DType::F32>(tz, 0, z0, z1);
            triple_step_256(s0, x0, y0, z0);
            triple_step_256(s1, x1, y1, z1);
        }
        triple_fold_256(acc, s0, s1);
    }
    out[0] = hsum_256(acc.dz);
    out[1] = hsum_256(acc.dd);
    out[2] = hsum_256(acc.zz);
    out[3] = hsum_256(acc.ee);
}

// --- Scalar -----------------------------------------------------------------------------------------------

struct TripleSumS {
    float dz[kScalarLanes], dd[kScalarLanes], zz[kScalarLanes], ee[kScalarLanes];
};

static inline void triple_step_scalar(TripleSumS& a, const float* x, const float* y, const float* z) {
    for (int l = 0; l < kScalarLanes; ++l) {
        const float d = x[l] - y[l];
        const float e = z[l] - y[l];
        a.dz[l] += d * z[l];
        a.dd[l] += d * d;
        a.zz[l] += z[l] * z[l];
        a.ee[l] += e * e;
    }
}

static inline void triple_fold_scalar(TripleSumS& acc, const TripleSumS& s) {
    for (int l = 0; l < kScalarLanes; ++l) {
        acc.dz[l] += s.dz[l];
        acc.dd[l] += s.dd[l];
        acc.zz[l] += s.zz[l];
        acc.ee[l] += s.ee[l];
    }
}

template <DType TX, DType TY, DType TZ>
void triple_block_scalar(const void* xp, const void* yp, const void* zp, int64_t off, int64_t len, double* out) {
    TripleSumS acc = {};
    float x[kScalarLanes], y[kScalarLanes], z[kScalarLanes];
    for (int64_t c0 = 0; c0 < len; c0 += kSubScalar) {
        const int64_t ce = std::min(len, c0 + kSubScalar);
        TripleSumS s = {};
        int64_t i = c0;
        for (; i + kScalarLanes <= ce; i += kScalarLanes) {
            load_lanes<TX>(xp, off + i, x);
            load_lanes<TY>(yp, off + i, y);
            load_lanes<TZ>(zp, off + i, z);
            triple_step_scalar(s, x, y, z);
        }
        if (i < ce) {
            tail_to_f32(xp, TX, off + i, ce - i, x, kScalarLanes);
            tail_to_f32(yp, TY, off + i, ce - i, y, kScalarLanes);
            tail_to_f32(zp, TZ, off + i, ce - i, z, kScalarLanes);
            triple_step_scalar(s, x, y, z);
        }
        triple_fold_scalar(acc, s);
    }
    out[0] = lanes_sum(acc.dz);
    out[1] = lanes_sum(acc.dd);
    out[2] = lanes_sum(acc.zz);
    out[3] = lanes_sum(acc.ee);
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
