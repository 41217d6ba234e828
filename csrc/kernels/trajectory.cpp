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

// One visit step at level Isa: elements j .. j+kStep-1 of the checkpoint against buf[i ..) (EO: the bf16
// even/odd lane order for full steps; buf keeps the same order).
template <class Isa, bool EO, bool PREV>
struct StepKernel {
    using V = typename Isa::V;
    Sums<Isa, PREV ? 4 : 1, PREV ? 1 : 0> sums;  // norm (, dot, l1, l2; max |d|)
    float* buf;
    Prefetcher pf;

    template <bool FULL, DType T>
    void step(const void* const* p, int64_t j, int64_t i) {
        if constexpr (FULL) Isa::prefetch_visit(pf, i);
        V c[Isa::kSets];
        Isa::template load<T, EO && FULL>(p[0], j, c);
        for (int h = 0; h < Isa::kSets; ++h) {
            V* a = sums.sub[h];
            float* b = buf + i + h * Isa::kLanes;
            if constexpr (PREV) {
                V q, d, ad;
                Isa::load_buf(q, b);
                Isa::sub(d, q, c[h]);
                Isa::abs(ad, d);
                Isa::fmadd(a[1], q, c[h]);
                Isa::fmadd(a[3], d, d);
                Isa::add(a[2], a[2], ad);
                Isa::max(sums.mx[0][h], ad);
            }
            Isa::store_buf(b, c[h]);
            Isa::fmadd(a[0], c[h], c[h]);
        }
    }
};

template <class Isa, bool EO, DType T, bool PREV>
static inline void step_block(const void* p, int64_t off, int64_t len, float* buf, double* out, Prefetcher pf) {
    StepKernel<Isa, EO, PREV> k;
    k.buf = buf;
    k.pf = pf;
    run_block<Isa, T>(k, &p, off, len, out);
}

// Per-level entry points: the level's target, everything inlined into them.
template <DType T, bool EO, bool PREV>
FPCORE_TARGET_AVX512 FPCORE_FLATTEN void step_512(const void* p, int64_t off, int64_t len, float* buf, double* out,
                                                  Prefetcher pf) {
    step_block<Avx512, EO, T, PREV>(p, off, len, buf, out, pf);
}

template <DType T, bool PREV>
FPCORE_TARGET_AVX2 FPCORE_FLATTEN void step_256(const void* p, int64_t off, int64_t len, float* buf, double* out,
                                                Prefetcher pf) {
    step_block<Avx2, false, T, PREV>(p, off, len, buf, out, pf);
}

template <DType T, bool PREV>
FPCORE_FLATTEN void step_scalar(const void* p, int64_t off, int64_t len, float* buf, double* out, Prefetcher pf) {
    step_block<Scalar, false, T, PREV>(p, off, len, buf, out, pf);
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
