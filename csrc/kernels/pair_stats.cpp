// pair_stats: dot, |x|^2, |y|^2, l1, l2^2, linf of two vectors in one pass (memory bound).
//
// Numerics: see reduce_common.h (fp32 lanes inside blocks of kBlock elements, fp64 partials folded in block
// order, identical for any thread count; linf NaN iff l2sq NaN).
#include "reduce_common.h"

namespace fpcore {
namespace kernels {

namespace {

using namespace reduce;

// One block: out = {dot, xx, yy, l1, l2sq, linf} of elements off .. off+len-1.
using PairFn = void (*)(const void* xp, const void* yp, int64_t off, int64_t len, double* out);

// --- AVX-512 ----------------------------------------------------------------------------------------------

struct PairAcc512 {
    __m512 dot, xx, yy, l1, l2, mx;
};

FPCORE_TARGET_AVX512 static inline void pair_zero_512(PairAcc512& a) {
    a.dot = a.xx = a.yy = a.l1 = a.l2 = a.mx = _mm512_setzero_ps();
}

FPCORE_TARGET_AVX512 static inline void pair_step_512(PairAcc512& a, __m512 x, __m512 y) {
    const __m512 d = _mm512_sub_ps(x, y);
    const __m512 ad = _mm512_abs_ps(d);
    a.dot = _mm512_fmadd_ps(x, y, a.dot);
    a.xx = _mm512_fmadd_ps(x, x, a.xx);
    a.yy = _mm512_fmadd_ps(y, y, a.yy);
    a.l2 = _mm512_fmadd_ps(d, d, a.l2);
    a.l1 = _mm512_add_ps(a.l1, ad);
    a.mx = _mm512_max_ps(a.mx, ad);
}

template <DType TX, DType TY, bool EO>
FPCORE_TARGET_AVX512 void pair_block_512(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairAcc512 a0, a1;
    pair_zero_512(a0);
    pair_zero_512(a1);
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512 x0, x1, y0, y1;
        ld2_512<TX, EO>(xp, off + i, x0, x1);
        ld2_512<TY, EO>(yp, off + i, y0, y1);
        pair_step_512(a0, x0, y0);
        pair_step_512(a1, x1, y1);
    }
    if (i < len) {
        alignas(64) float tx[32], ty[32];
        tail_to_f32(xp, TX, off + i, len - i, tx, 32);
        tail_to_f32(yp, TY, off + i, len - i, ty, 32);
        __m512 x0, x1, y0, y1;
        ld2_512<DType::F32, false>(tx, 0, x0, x1);
        ld2_512<DType::F32, false>(ty, 0, y0, y1);
        pair_step_512(a0, x0, y0);
        pair_step_512(a1, x1, y1);
    }
    out[0] = hsum2_512(a0.dot, a1.dot);
    out[1] = hsum2_512(a0.xx, a1.xx);
    out[2] = hsum2_512(a0.yy, a1.yy);
    out[3] = hsum2_512(a0.l1, a1.l1);
    out[4] = hsum2_512(a0.l2, a1.l2);
    out[5] = hmax2_512(a0.mx, a1.mx);
}

// --- AVX2 -------------------------------------------------------------------------------------------------

struct PairAcc256 {
    __m256 dot, xx, yy, l1, l2, mx;
};

FPCORE_TARGET_AVX2 static inline void pair_zero_256(PairAcc256& a) {
    a.dot = a.xx = a.yy = a.l1 = a.l2 = a.mx = _mm256_setzero_ps();
}

FPCORE_TARGET_AVX2 static inline void pair_step_256(PairAcc256& a, __m256 x, __m256 y) {
    const __m256 d = _mm256_sub_ps(x, y);
    const __m256 ad = abs_256(d);
    a.dot = _mm256_fmadd_ps(x, y, a.dot);
    a.xx = _mm256_fmadd_ps(x, x, a.xx);
    a.yy = _mm256_fmadd_ps(y, y, a.yy);
    a.l2 = _mm256_fmadd_ps(d, d, a.l2);
    a.l1 = _mm256_add_ps(a.l1, ad);
    a.mx = _mm256_max_ps(a.mx, ad);
}

template <DType TX, DType TY>
FPCORE_TARGET_AVX2 void pair_block_256(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairAcc256 a0, a1;
    pair_zero_256(a0);
    pair_zero_256(a1);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
        __m256 x0, x1, y0, y1;
        ld2_256<TX>(xp, off + i, x0, x1);
        ld2_256<TY>(yp, off + i, y0, y1);
        pair_step_256(a0, x0, y0);
        pair_step_256(a1, x1, y1);
    }
    if (i < len) {
        alignas(32) float tx[16], ty[16];
        tail_to_f32(xp, TX, off + i, len - i, tx, 16);
        tail_to_f32(yp, TY, off + i, len - i, ty, 16);
        __m256 x0, x1, y0, y1;
        ld2_256<DType::F32>(tx, 0, x0, x1);
        ld2_256<DType::F32>(ty, 0, y0, y1);
        pair_step_256(a0, x0, y0);
        pair_step_256(a1, x1, y1);
    }
    out[0] = hsum2_256(a0.dot, a1.dot);
    out[1] = hsum2_256(a0.xx, a1.xx);
    out[2] = hsum2_256(a0.yy, a1.yy);
    out[3] = hsum2_256(a0.l1, a1.l1);
    out[4] = hsum2_256(a0.l2, a1.l2);
    out[5] = hmax2_256(a0.mx, a1.mx);
}

// --- Scalar -----------------------------------------------------------------------------------------------

struct PairAccS {
    float dot[kScalarLanes], xx[kScalarLanes], yy[kScalarLanes], l1[kScalarLanes], l2[kScalarLanes],
        mx[kScalarLanes];
};

static inline void pair_step_scalar(PairAccS& a, const float* x, const float* y) {
    for (int l = 0; l < kScalarLanes; ++l) {
        const float d = x[l] - y[l];
        const float ad = std::fabs(d);
        a.dot[l] += x[l] * y[l];
        a.xx[l] += x[l] * x[l];
        a.yy[l] += y[l] * y[l];
        a.l2[l] += d * d;
        a.l1[l] += ad;
        a.mx[l] = ad > a.mx[l] ? ad : a.mx[l];
    }
}

template <DType TX, DType TY>
void pair_block_scalar(const void* xp, const void* yp, int64_t off, int64_t len, double* out) {
    PairAccS a = {};
    float x[kScalarLanes], y[kScalarLanes];
    int64_t i = 0;
    for (; i + kScalarLanes <= len; i += kScalarLanes) {
        load_lanes<TX>(xp, off + i, x);
        load_lanes<TY>(yp, off + i, y);
        pair_step_scalar(a, x, y);
    }
    if (i < len) {
        tail_to_f32(xp, TX, off + i, len - i, x, kScalarLanes);
        tail_to_f32(yp, TY, off + i, len - i, y, kScalarLanes);
        pair_step_scalar(a, x, y);
    }
    out[0] = lanes_sum(a.dot);
    out[1] = lanes_sum(a.xx);
    out[2] = lanes_sum(a.yy);
    out[3] = lanes_sum(a.l1);
    out[4] = lanes_sum(a.l2);
    out[5] = lanes_max(a.mx);
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
