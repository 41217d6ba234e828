// Trajectory statistics over T checkpoints (each a list of tensors), every checkpoint read from memory once.
//
// Numerics: see reduce_common.h (fp32 lanes inside blocks of kBlock elements, fp64 partials folded in block
// order, identical for any thread count; linf NaN iff l2sq NaN).
//
// trajectory_consecutive: for each block of elements, checkpoints t = 0..T-1 are visited in turn. Block t is
// loaded and widened to fp32 once; that one pass gives |theta_t|^2 and the pair (t-1, t) against the fp32
// copy of block t-1 kept in a 16 KB (L1-resident) buffer, which block t then overwrites in place. So each
// element is read from memory once and converted once, and |theta_t|^2 is computed once per checkpoint.
//
// trajectory_all: for each block, the T checkpoints' elements are widened into an fp32 buffer (T x S floats,
// S <= kBlock chosen so the buffer stays near 1 MB, i.e. in L2), then register tiles of pairs (i <= j) run
// over it: 4 x 2 pairs on avx512, 2 x 2 on avx2/scalar, two accumulators per pair (<x_i,x_j> and
// |x_i - x_j|^2 from the differences, never the Gram identity). When S < kBlock the block is walked in
// sub-chunks of S elements and the tiles' fp32 accumulators are parked in a spill buffer between sub-chunks,
// so the accumulation order inside a block is the same as for one pass (S changes speed, not results).
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
// (prev, cur). Leaves cur in buf.
using StepFn = void (*)(const void* p, int64_t off, int64_t len, float* buf, double* out);

// --- AVX-512 ----------------------------------------------------------------------------------------------

struct StepAcc512 {
    __m512 norm, dot, l1, l2, mx;
};

FPCORE_TARGET_AVX512 static inline void step_zero_512(StepAcc512& a) {
    a.norm = a.dot = a.l1 = a.l2 = a.mx = _mm512_setzero_ps();
}

template <bool PREV>
FPCORE_TARGET_AVX512 static inline void step_body_512(StepAcc512& a, float* buf, __m512 c) {
    if constexpr (PREV) {
        const __m512 p = _mm512_load_ps(buf);
        const __m512 d = _mm512_sub_ps(p, c);
        const __m512 ad = _mm512_abs_ps(d);
        a.dot = _mm512_fmadd_ps(p, c, a.dot);
        a.l2 = _mm512_fmadd_ps(d, d, a.l2);
        a.l1 = _mm512_add_ps(a.l1, ad);
        a.mx = _mm512_max_ps(a.mx, ad);
    }
    _mm512_store_ps(buf, c);
    a.norm = _mm512_fmadd_ps(c, c, a.norm);
}

template <DType T, bool EO, bool PREV>
FPCORE_TARGET_AVX512 void step_512(const void* p, int64_t off, int64_t len, float* buf, double* out) {
    StepAcc512 a0, a1;
    step_zero_512(a0);
    step_zero_512(a1);
    int64_t i = 0;
    for (; i + 32 <= len; i += 32) {
        __m512 c0, c1;
        ld2_512<T, EO>(p, off + i, c0, c1);
        step_body_512<PREV>(a0, buf + i, c0);
        step_body_512<PREV>(a1, buf + i + 16, c1);
    }
    if (i < len) {
        alignas(64) float tc[32];
        tail_to_f32(p, T, off + i, len - i, tc, 32);
        __m512 c0, c1;
        ld2_512<DType::F32, false>(tc, 0, c0, c1);
        step_body_512<PREV>(a0, buf + i, c0);
        step_body_512<PREV>(a1, buf + i + 16, c1);
    }
    out[0] = hsum2_512(a0.norm, a1.norm);
    if constexpr (PREV) {
        out[1] = hsum2_512(a0.dot, a1.dot);
        out[2] = hsum2_512(a0.l1, a1.l1);
        out[3] = hsum2_512(a0.l2, a1.l2);
        out[4] = hmax2_512(a0.mx, a1.mx);
    }
}

// --- AVX2 -------------------------------------------------------------------------------------------------

struct StepAcc256 {
    __m256 norm, dot, l1, l2, mx;
};

FPCORE_TARGET_AVX2 static inline void step_zero_256(StepAcc256& a) {
    a.norm = a.dot = a.l1 = a.l2 = a.mx = _mm256_setzero_ps();
}

template <bool PREV>
FPCORE_TARGET_AVX2 static inline void step_body_256(StepAcc256& a, float* buf, __m256 c) {
    if constexpr (PREV) {
        const __m256 p = _mm256_load_ps(buf);
        const __m256 d = _mm256_sub_ps(p, c);
        const __m256 ad = abs_256(d);
        a.dot = _mm256_fmadd_ps(p, c, a.dot);
        a.l2 = _mm256_fmadd_ps(d, d, a.l2);
        a.l1 = _mm256_add_ps(a.l1, ad);
        a.mx = _mm256_max_ps(a.mx, ad);
    }
    _mm256_store_ps(buf, c);
    a.norm = _mm256_fmadd_ps(c, c, a.norm);
}

template <DType T, bool PREV>
FPCORE_TARGET_AVX2 void step_256(const void* p, int64_t off, int64_t len, float* buf, double* out) {
    StepAcc256 a0, a1;
    step_zero_256(a0);
    step_zero_256(a1);
    int64_t i = 0;
    for (; i + 16 <= len; i += 16) {
        __m256 c0, c1;
        ld2_256<T>(p, off + i, c0, c1);
        step_body_256<PREV>(a0, buf + i, c0);
        step_body_256<PREV>(a1, buf + i + 8, c1);
    }
    if (i < len) {
        alignas(32) float tc[16];
        tail_to_f32(p, T, off + i, len - i, tc, 16);
        __m256 c0, c1;
        ld2_256<DType::F32>(tc, 0, c0, c1);
        step_body_256<PREV>(a0, buf + i, c0);
        step_body_256<PREV>(a1, buf + i + 8, c1);
    }
    out[0] = hsum2_256(a0.norm, a1.norm);
    if constexpr (PREV) {
        out[1] = hsum2_256(a0.dot, a1.dot);
        out[2] = hsum2_256(a0.l1, a1.l1);
        out[3] = hsum2_256(a0.l2, a1.l2);
        out[4] = hmax2_256(a0.mx, a1.mx);
    }
}

// --- Scalar -----------------------------------------------------------------------------------------------

struct StepAccS {
    float norm[kScalarLanes], dot[kScalarLanes], l1[kScalarLanes], l2[kScalarLanes], mx[kScalarLanes];
};

template <bool PREV>
static inline void step_body_scalar(StepAccS& a, float* buf, const float* c) {
    for (int l = 0; l < kScalarLanes; ++l) {
        if constexpr (PREV) {
            const float p = buf[l];
            const float d = p - c[l];
            const float ad = std::fabs(d);
            a.dot[l] += p * c[l];
            a.l2[l] += d * d;
            a.l1[l] += ad;
            a.mx[l] = ad > a.mx[l] ? ad : a.mx[l];
        }
        buf[l] = c[l];
        a.norm[l] += c[l] * c[l];
    }
}

template <DType T, bool PREV>
void step_scalar(const void* p, int64_t off, int64_t len, float* buf, double* out) {
    StepAccS a = {};
    float c[kScalarLanes];
    int64_t i = 0;
    for (; i + kScalarLanes <= len; i += kScalarLanes) {
        load_lanes<T>(p, off + i, c);
        step_body_scalar<PREV>(a, buf + i, c);
    }
    if (i < len) {
        tail_to_f32(p, T, off + i, len - i, c, kScalarLanes);
        step_body_scalar<PREV>(a, buf + i, c);
    }
    out[0] = lanes_sum(a.norm);
    if constexpr (PREV) {
        out[1] = lanes_sum(a.dot);
        out[2] = lanes_sum(a.l1);
        out[3] = lanes_sum(a.l2);
        out[4] = lanes_max(a.mx);
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
static inline int64_t pair_index(int64_t i, int64_t j, int64_t T) { return i * T - i * (i - 1) / 2 + (j - i); }

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
    __m512 g[RI][CJ], l[RI][CJ];
#pragma GCC unroll 8
    for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
        for (int c = 0; c < CJ; ++c) {
            if (mode & kLoad) {
                g[r][c] = _mm512_load_ps(spill + (2 * (r * CJ + c)) * 16);
                l[r][c] = _mm512_load_ps(spill + (2 * (r * CJ + c) + 1) * 16);
            } else {
                g[r][c] = l[r][c] = _mm512_setzero_ps();
            }
        }
    }
    const float* xi = buf + i0 * S;
    const float* xj = buf + j0 * S;
    for (int64_t k = 0; k < n; k += 16) {
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
            if (mode & kStore) {
                _mm512_store_ps(spill + (2 * (r * CJ + c)) * 16, g[r][c]);
                _mm512_store_ps(spill + (2 * (r * CJ + c) + 1) * 16, l[r][c]);
            } else {
                const int64_t i = i0 + r, j = j0 + c;
                if (i <= j && j < T) {
                    const int64_t q = pair_index(i, j, T);
                    out[2 * q] = hsum_512(g[r][c]);
                    out[2 * q + 1] = hsum_512(l[r][c]);
                }
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
FPCORE_TARGET_AVX2 void tile_256(const float* buf, int64_t S, int64_t i0, int64_t j0, int64_t n, float* spill,
                                 int mode, int64_t T, double* out) {
    __m256 g[RI][CJ], l[RI][CJ];
#pragma GCC unroll 8
    for (int r = 0; r < RI; ++r) {
#pragma GCC unroll 8
        for (int c = 0; c < CJ; ++c) {
            if (mode & kLoad) {
                g[r][c] = _mm256_load_ps(spill + (2 * (r * CJ + c)) * 8);
                l[r][c] = _mm256_load_ps(spill + (2 * (r * CJ + c) + 1) * 8);
            } else {
                g[r][c] = l[r][c] = _mm256_setzero_ps();
            }
        }
    }
    const float* xi = buf + i0 * S;
    const float* xj = buf + j0 * S;
    for (int64_t k = 0; k < n; k += 8) {
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
            if (mode & kStore) {
                _mm256_store_ps(spill + (2 * (r * CJ + c)) * 8, g[r][c]);
                _mm256_store_ps(spill + (2 * (r * CJ + c) + 1) * 8, l[r][c]);
            } else {
                const int64_t i = i0 + r, j = j0 + c;
                if (i <= j && j < T) {
                    const int64_t q = pair_index(i, j, T);
                    out[2 * q] = hsum_256(g[r][c]);
                    out[2 * q + 1] = hsum_256(l[r][c]);
                }
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
    constexpr int W = kScalarLanes;
    float g[RI][CJ][W], l[RI][CJ][W];
    for (int r = 0; r < RI; ++r) {
        for (int c = 0; c < CJ; ++c) {
            for (int w = 0; w < W; ++w) {
                g[r][c][w] = (mode & kLoad) ? spill[(2 * (r * CJ + c)) * W + w] : 0.0f;
                l[r][c][w] = (mode & kLoad) ? spill[(2 * (r * CJ + c) + 1) * W + w] : 0.0f;
            }
        }
    }
    for (int64_t k = 0; k < n; k += W) {
        for (int r = 0; r < RI; ++r) {
            const float* a = buf + (i0 + r) * S + k;
            for (int c = 0; c < CJ; ++c) {
                const float* b = buf + (j0 + c) * S + k;
                for (int w = 0; w < W; ++w) {
                    const float d = a[w] - b[w];
                    l[r][c][w] += d * d;
                    g[r][c][w] += a[w] * b[w];
                }
            }
        }
    }
    for (int r = 0; r < RI; ++r) {
        for (int c = 0; c < CJ; ++c) {
            if (mode & kStore) {
                for (int w = 0; w < W; ++w) {
                    spill[(2 * (r * CJ + c)) * W + w] = g[r][c][w];
                    spill[(2 * (r * CJ + c) + 1) * W + w] = l[r][c][w];
                }
            } else {
                const int64_t i = i0 + r, j = j0 + c;
                if (i <= j && j < T) {
                    const int64_t q = pair_index(i, j, T);
                    out[2 * q] = lanes_sum(g[r][c]);
                    out[2 * q + 1] = lanes_sum(l[r][c]);
                }
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

// fp32 buffer budget of trajectory_all per thread (T x S floats): about half the L2 of one core.
constexpr int64_t kAllBufferBytes = int64_t{1} << 20;

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
    std::vector<double> res(static_cast<size_t>(K));
    fold_blocks(
        static_cast<int64_t>(blocks.size()), K, nsum, std::max<int64_t>(1, 16 / T), res.data(),
        [] { return FloatBuf(kBlock + 32); },
        [&](int64_t b, double* out, FloatBuf& buf) {
            const Block& bl = blocks[b];
            for (int64_t t = 0; t < T; ++t) {
                const int64_t s = t * nt + bl.tensor;
                double o[5];
                fns[s](ckpt[s].ptr, bl.off, bl.len, buf.get(), o);
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
    int64_t S = kBlock;
    while (S > 256 && Tpad * S * static_cast<int64_t>(sizeof(float)) > kAllBufferBytes) S /= 2;
    int64_t ntiles = 0;
    for (int64_t i0 = 0; i0 < T; i0 += lv.ri) {
        for (int64_t j0 = i0 / lv.cj * lv.cj; j0 < T; j0 += lv.cj) ++ntiles;
    }
    const int64_t tile_floats = 2 * lv.ri * lv.cj * lv.lanes;
    const int64_t K = T * (T + 1);  // (dot, l2sq) of each pair i <= j
    const std::vector<Block> blocks = make_blocks(ckpt, nt);
    struct Scratch {
        FloatBuf buf, spill;
    };
    std::vector<double> res(static_cast<size_t>(K));
    fold_blocks(
        static_cast<int64_t>(blocks.size()), K, K, std::max<int64_t>(1, 16 / (T * T)), res.data(),
        [&] { return Scratch{FloatBuf(Tpad * S), S < kBlock ? FloatBuf(ntiles * tile_floats) : FloatBuf()}; },
        [&](int64_t b, double* out, Scratch& s) {
            const Block& bl = blocks[b];
            const int64_t nsub = (bl.len + S - 1) / S;
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
                        float* spill = mode != 0 ? s.spill.get() + idx * tile_floats : nullptr;
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
