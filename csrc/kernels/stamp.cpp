// stamp_many: out = base + alpha_0 * v_0 + ... + alpha_{nvec-1} * v_{nvec-1}, elementwise, over many
// contiguous tensors at once (the elementwise family: stamp, stamp_, extract and their multi-tensor forms).
//
// Numerics (bit-exact with the torch twin, see kernels.h):
//   acc = f32(base)
//   for k: m = alpha_k * f32(v_k)   (rounded to fp32)
//          acc = acc + m            (rounded to fp32; never an FMA: the build uses -ffp-contract=off and
//                                    the code below only issues separate mul and add instructions)
//   out = round_to_out_dtype(acc)    (nearest even, subnormals kept)
// Widening bf16/f16 -> fp32 is exact. fp32 -> bf16 is done with integer ops (bits + 0x7FFF + lsb, keep the
// high half; NaN lanes forced to 0x7FC0) because the AVX512-BF16 instruction vcvtneps2bf16 flushes
// subnormals to zero. fp32 -> f16 uses vcvtps2ph with round-to-nearest-even, which is IEEE (subnormals kept,
// overflow to inf, NaN stays NaN). The scalar path (dtype.h) gives the same bits and handles the tails of
// the AVX2 path, so every SIMD level and every thread count produces identical output.
//
// Performance: the kernel is memory bound. The work is
//   * one flat list of chunks over all tasks (a chunk never crosses a task boundary), handed out to the
//     OpenMP threads in order, one chunk at a time, in a single parallel region: 1,000 small tensors run
//     like one big one, and a thread slowed by a neighbour on a shared machine is made up for by the others;
//   * specialised by template on the hot dtype combinations (no per-element switch), with an nvec == 1
//     form; every other combination takes a generic path with a run-time dtype switch per vector load;
//   * fed by software prefetch of every input stream a little ahead (see kPrefetchBytes);
//   * stored with non-temporal (streaming) stores when the output is large and distinct from the base: a
//     streaming store writes whole cache lines to memory without first reading them (no read-for-ownership),
//     which removes a third of the memory traffic of an ordinary store, and leaves the cache to the inputs.
//     In place (out == base) the line was just read, so ordinary stores are used; small outputs (which
//     may well be read again soon from cache) also use ordinary stores.

// GCC 12.2 reports -W(maybe-)uninitialized inside the AVX-512 intrinsic headers (the `__Y = __Y` idiom of
// _mm512_undefined_*, GCC bug 105593, fixed in 12.3). Silenced for the header lines only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include <algorithm>
#include <cstdint>
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

namespace {

// Template dtype parameter meaning "decided at run time" (generic path); as NV: nvec decided at run time.
constexpr int kAny = -1;
constexpr int kF32 = static_cast<int>(DType::F32);
constexpr int kBF16 = static_cast<int>(DType::BF16);
constexpr int kF16 = static_cast<int>(DType::F16);

// Streaming stores pay off only when the output would not stay in cache anyway: all tasks' output
// together above this many bytes.
constexpr int64_t kStreamMinBytes = int64_t{4} << 20;
// Fewer elements than this per thread are not worth waking another thread for.
constexpr int64_t kMinElemsPerThread = int64_t{1} << 15;
// Work is shared out in chunks of elements: about kChunksPerThread per thread, each kMinChunk..kMaxChunk
// elements (a multiple of 64: whole cache lines). Chunks of 256K measured a few % faster than 16-64K
// (each chunk restarts the prefetch streams).
constexpr int64_t kChunksPerThread = 8;
constexpr int64_t kMinChunk = int64_t{1} << 12;
constexpr int64_t kMaxChunk = int64_t{1} << 18;

inline DType pick_t(int T, DType runtime) {
    return T == kAny ? runtime : static_cast<DType>(T);
}

// Software prefetch distance for the inputs. On the development machine (2-core Sapphire Rapids VM) the
// hardware prefetchers alone left 20-30% of the bandwidth unused for the bf16 and in-place cases;
// prefetching each input 2 KB ahead into L1 recovers it (1-4 KB all about equal; the NTA hint was far
// slower, T1 a little slower).
constexpr int64_t kPrefetchBytes = 2048;

// Prefetches, kPrefetchBytes ahead, the input lines of elements [i, i + nelem). Prefetches never fault, so
// running past the end of a buffer is harmless (addresses are computed as integers for that reason).
// Always inlined: GCC's pure/const analysis otherwise sees a function whose only effect is a prefetch as
// having none and deletes the calls.
__attribute__((always_inline)) inline void prefetch_lines(const void* p, int64_t elem_size, int64_t i, int64_t nelem) {
    const uintptr_t first = reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(i * elem_size + kPrefetchBytes);
    for (int64_t off = 0; off < nelem * elem_size; off += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(first + static_cast<uintptr_t>(off)), _MM_HINT_T0);
    }
}

template <int BT, int VT>
__attribute__((always_inline)) inline void prefetch_inputs(const StampTask& s, int nv, int64_t i, int64_t nelem) {
    prefetch_lines(s.base, dtype_size(pick_t(BT, s.base_t)), i, nelem);
    for (int k = 0; k < nv; ++k) prefetch_lines(s.vec[k], dtype_size(pick_t(VT, s.vec_t[k])), i, nelem);
}

// One run of a task: elements [b, e). nvec and alphas are shared by all tasks.
using RangeFn = void (*)(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e);

// ---------------------------------------------------------------------------------------------------------
// Scalar: the reference loop with dtype.h's exact conversions. Also the head/tail handler of the AVX2 path.

void range_scalar(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
        float acc = load_f32(s.base, s.base_t, i);
        for (int k = 0; k < nvec; ++k) {
            const float m = alphas[k] * load_f32(s.vec[k], s.vec_t[k], i);
            acc = acc + m;
        }
        store_f32(s.out, s.out_t, i, acc);
    }
}

// ---------------------------------------------------------------------------------------------------------
// AVX-512: 16 fp32 lanes; one step is 32 elements, i.e. one 64-byte store for a bf16/f16 output.

// fp32 -> bf16, nearest even, in the high 16 bits of each 32-bit lane; NaN lanes -> 0x7FC0.
FPCORE_TARGET_AVX512 inline __m512i bf16_hi16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC00000));
}

FPCORE_TARGET_AVX512 inline __m256i to_bf16_16(__m512 x) {
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_hi16(x), 16));
}

FPCORE_TARGET_AVX512 inline __m256i to_f16_16(__m512 x) {
    return _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// acc over 16 lanes starting at element i (full, or the first `count` lanes when Tail).
template <int BT, int VT, int NV, bool Tail>
FPCORE_TARGET_AVX512 inline __m512 combine16(const StampTask& s, const __m512* a, int nvec, int64_t i, int count) {
    const int nv = NV == kAny ? nvec : NV;
    __m512 acc = Tail ? simd::load16_tail(s.base, pick_t(BT, s.base_t), i, count)
                      : simd::load16(s.base, pick_t(BT, s.base_t), i);
    for (int k = 0; k < nv; ++k) {
        const __m512 v = Tail ? simd::load16_tail(s.vec[k], pick_t(VT, s.vec_t[k]), i, count)
                              : simd::load16(s.vec[k], pick_t(VT, s.vec_t[k]), i);
        acc = _mm512_add_ps(acc, _mm512_mul_ps(a[k], v));  // two roundings, as the spec says
    }
    return acc;
}

// Stores 32 results (lo = elements i..i+15, hi = i+16..i+31). Stream: out + i is 64-byte aligned.
template <int OT, bool Stream>
FPCORE_TARGET_AVX512 inline void store32(void* out, DType out_t, int64_t i, __m512 lo, __m512 hi) {
    switch (pick_t(OT, out_t)) {
        case DType::F32: {
            float* p = static_cast<float*>(out) + i;
            if (Stream) {
                _mm512_stream_ps(p, lo);
                _mm512_stream_ps(p + 16, hi);
            } else {
                _mm512_storeu_ps(p, lo);
                _mm512_storeu_ps(p + 16, hi);
            }
            return;
        }
        case DType::BF16: {
            // Gather the high halves (the bf16 bits) of both vectors, in order, into one register.
            const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29,
                                                 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
            const __m512i r = _mm512_permutex2var_epi16(bf16_hi16(lo), odd, bf16_hi16(hi));
            void* p = static_cast<uint16_t*>(out) + i;
            if (Stream) {
                _mm512_stream_si512(static_cast<__m512i*>(p), r);
            } else {
                _mm512_storeu_si512(p, r);
            }
            return;
        }
        case DType::F16: {
            const __m512i r = _mm512_inserti64x4(_mm512_castsi256_si512(to_f16_16(lo)), to_f16_16(hi), 1);
            void* p = static_cast<uint16_t*>(out) + i;
            if (Stream) {
                _mm512_stream_si512(static_cast<__m512i*>(p), r);
            } else {
                _mm512_storeu_si512(p, r);
            }
            return;
        }
    }
}

// Stores the first `count` (1..16) lanes of x at element i.
template <int OT>
FPCORE_TARGET_AVX512 inline void store16_tail(void* out, DType out_t, int64_t i, __m512 x, int count) {
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1u);
    switch (pick_t(OT, out_t)) {
        case DType::F32: _mm512_mask_storeu_ps(static_cast<float*>(out) + i, m, x); return;
        case DType::BF16: _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i, m, to_bf16_16(x)); return;
        case DType::F16: _mm256_mask_storeu_epi16(static_cast<uint16_t*>(out) + i, m, to_f16_16(x)); return;
    }
}

// Fewer than 32 elements from i, with masked loads and stores.
template <int OT, int BT, int VT, int NV>
FPCORE_TARGET_AVX512 inline void part512(const StampTask& s, const __m512* a, int nvec, int64_t i, int64_t count) {
    while (count > 0) {
        const int c = static_cast<int>(std::min<int64_t>(count, 16));
        store16_tail<OT>(s.out, s.out_t, i, combine16<BT, VT, NV, true>(s, a, nvec, i, c), c);
        i += c;
        count -= c;
    }
}

template <int OT, int BT, int VT, int NV, bool Stream>
FPCORE_TARGET_AVX512 void range512(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e) {
    const int nv = NV == kAny ? nvec : NV;
    __m512 a[kMaxVectors];
    for (int k = 0; k < nv; ++k) a[k] = _mm512_set1_ps(alphas[k]);
    int64_t i = b;
    if (Stream) {
        // Peel a masked head so that every streaming store below is to a 64-byte aligned address.
        const int64_t osize = dtype_size(pick_t(OT, s.out_t));
        const uintptr_t addr = reinterpret_cast<uintptr_t>(s.out) + static_cast<uintptr_t>(i * osize);
        const int64_t head = std::min<int64_t>(static_cast<int64_t>((64 - addr % 64) % 64) / osize, e - i);
        part512<OT, BT, VT, NV>(s, a, nvec, i, head);
        i += head;
    }
    for (; i + 64 <= e; i += 64) {
        prefetch_inputs<BT, VT>(s, nv, i, 64);
        store32<OT, Stream>(s.out, s.out_t, i, combine16<BT, VT, NV, false>(s, a, nvec, i, 16),
                            combine16<BT, VT, NV, false>(s, a, nvec, i + 16, 16));
        store32<OT, Stream>(s.out, s.out_t, i + 32, combine16<BT, VT, NV, false>(s, a, nvec, i + 32, 16),
                            combine16<BT, VT, NV, false>(s, a, nvec, i + 48, 16));
    }
    if (i + 32 <= e) {
        store32<OT, Stream>(s.out, s.out_t, i, combine16<BT, VT, NV, false>(s, a, nvec, i, 16),
                            combine16<BT, VT, NV, false>(s, a, nvec, i + 16, 16));
        i += 32;
    }
    part512<OT, BT, VT, NV>(s, a, nvec, i, e - i);
    if (Stream) _mm_sfence();  // order the streaming stores before anything this thread does next
}

struct Avx512 {
    template <int OT, int BT, int VT, int NV, bool Stream>
    static RangeFn get() {
        return &range512<OT, BT, VT, NV, Stream>;
    }
};

// ---------------------------------------------------------------------------------------------------------
// AVX2: 8 fp32 lanes; one step is 16 elements (one 32-byte store for a bf16/f16 output). Head and tail scalar.

FPCORE_TARGET_AVX2 inline __m256i bf16_hi16_8(__m256 x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC00000), nan);
}

template <int BT, int VT, int NV>
FPCORE_TARGET_AVX2 inline __m256 combine8(const StampTask& s, const __m256* a, int nvec, int64_t i) {
    const int nv = NV == kAny ? nvec : NV;
    __m256 acc = simd::load8(s.base, pick_t(BT, s.base_t), i);
    for (int k = 0; k < nv; ++k) {
        acc = _mm256_add_ps(acc, _mm256_mul_ps(a[k], simd::load8(s.vec[k], pick_t(VT, s.vec_t[k]), i)));
    }
    return acc;
}

// Stores 16 results (lo = elements i..i+7, hi = i+8..i+15). Stream: out + i is 32-byte aligned.
template <int OT, bool Stream>
FPCORE_TARGET_AVX2 inline void store16_256(void* out, DType out_t, int64_t i, __m256 lo, __m256 hi) {
    __m256i r;
    switch (pick_t(OT, out_t)) {
        case DType::F32: {
            float* p = static_cast<float*>(out) + i;
            if (Stream) {
                _mm256_stream_ps(p, lo);
                _mm256_stream_ps(p + 8, hi);
            } else {
                _mm256_storeu_ps(p, lo);
                _mm256_storeu_ps(p + 8, hi);
            }
            return;
        }
        case DType::BF16: {
            // packus interleaves the 128-bit halves: [lo0-3 hi0-3 | lo4-7 hi4-7]; the qword permute restores order.
            const __m256i w =
                _mm256_packus_epi32(_mm256_srli_epi32(bf16_hi16_8(lo), 16), _mm256_srli_epi32(bf16_hi16_8(hi), 16));
            r = _mm256_permute4x64_epi64(w, 0xD8);
            break;
        }
        case DType::F16:
            r = _mm256_set_m128i(_mm256_cvtps_ph(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                 _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            break;
        default: return;
    }
    __m256i* p = reinterpret_cast<__m256i*>(static_cast<uint16_t*>(out) + i);
    if (Stream) {
        _mm256_stream_si256(p, r);
    } else {
        _mm256_storeu_si256(p, r);
    }
}

template <int OT, int BT, int VT, int NV, bool Stream>
FPCORE_TARGET_AVX2 void range256(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e) {
    const int nv = NV == kAny ? nvec : NV;
    __m256 a[kMaxVectors];
    for (int k = 0; k < nv; ++k) a[k] = _mm256_set1_ps(alphas[k]);
    int64_t i = b;
    if (Stream) {
        // Scalar head up to a 64-byte aligned output address.
        const int64_t osize = dtype_size(pick_t(OT, s.out_t));
        const uintptr_t addr = reinterpret_cast<uintptr_t>(s.out) + static_cast<uintptr_t>(i * osize);
        const int64_t head = std::min<int64_t>(static_cast<int64_t>((64 - addr % 64) % 64) / osize, e - i);
        range_scalar(s, alphas, nvec, i, i + head);
        i += head;
    }
    for (; i + 32 <= e; i += 32) {
        prefetch_inputs<BT, VT>(s, nv, i, 32);
        store16_256<OT, Stream>(s.out, s.out_t, i, combine8<BT, VT, NV>(s, a, nvec, i),
                                combine8<BT, VT, NV>(s, a, nvec, i + 8));
        store16_256<OT, Stream>(s.out, s.out_t, i + 16, combine8<BT, VT, NV>(s, a, nvec, i + 16),
                                combine8<BT, VT, NV>(s, a, nvec, i + 24));
    }
    if (i + 16 <= e) {
        store16_256<OT, Stream>(s.out, s.out_t, i, combine8<BT, VT, NV>(s, a, nvec, i),
                                combine8<BT, VT, NV>(s, a, nvec, i + 8));
        i += 16;
    }
    range_scalar(s, alphas, nvec, i, e);
    if (Stream) _mm_sfence();
}

struct Avx2 {
    template <int OT, int BT, int VT, int NV, bool Stream>
    static RangeFn get() {
        return &range256<OT, BT, VT, NV, Stream>;
    }
};

// ---------------------------------------------------------------------------------------------------------
// Licensee code (fpcore/code.h): after the one rounding, each element's stored bits move by +-step. The
// output is handled as 32-bit lanes of its stored bits (fp32 bits; bf16/f16 bits zero-extended), the code
// applied there, then narrowed and stored (streamed when the plain path would stream). Reads nothing more
// than the plain path: the code comes from the element index and the task's keys. One hash serves four
// elements, so the SIMD paths hash a window of 16 (8) groups at once and permute each lane's hash in.

constexpr uint32_t kPatternLut[kPatterns] = {pattern_lut(0),  pattern_lut(1),  pattern_lut(2),  pattern_lut(3),
                                             pattern_lut(4),  pattern_lut(5),  pattern_lut(6),  pattern_lut(7),
                                             pattern_lut(8),  pattern_lut(9),  pattern_lut(10), pattern_lut(11),
                                             pattern_lut(12), pattern_lut(13), pattern_lut(14), pattern_lut(15)};

// Per pattern m, the move of an element with bits b (+1 or -1, step 1): int16 for the AVX-512 path's
// word permutes of 16-bit outputs, int8 for the AVX2 path's byte shuffles.
template <typename T>
struct DeltaTable {
    alignas(64) T d[kPatterns][32];
    constexpr DeltaTable() : d() {
        for (uint32_t m = 0; m < static_cast<uint32_t>(kPatterns); ++m) {
            for (uint32_t b = 0; b < 32; ++b) d[m][b] = ((pattern_lut(m) >> b) & 1u) ? 1 : -1;
        }
    }
};
constexpr DeltaTable<int16_t> kDelta16{};
constexpr DeltaTable<int8_t> kDelta8{};

// The licensee's pattern table (pattern_lut of its symbol) for the block holding element idx,
// recomputed only when the block changes.
struct BlockLut {
    int64_t blk = -1;
    uint32_t m = 0;
    uint32_t symbol(const CodeParams& c, int64_t idx) {
        if ((idx >> kCodeBlockBits) != blk) {
            blk = idx >> kCodeBlockBits;
            m = c.symbols[code_segment(c, idx)] & 15u;
        }
        return m;
    }
    uint32_t get(const CodeParams& c, int64_t idx) { return kPatternLut[symbol(c, idx)]; }
};

inline bool straddles_block(int64_t idx0, int64_t count) {
    return (idx0 >> kCodeBlockBits) != ((idx0 + count - 1) >> kCodeBlockBits);
}

void range_scalar_code(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e) {
    const CodeParams& c = *s.code;
    const CodeFormat f = code_format(s.out_t, c.fp32_step);
    BlockLut bl;
    for (int64_t i = b; i < e; ++i) {
        float acc = load_f32(s.base, s.base_t, i);
        for (int k = 0; k < nvec; ++k) {
            const float m = alphas[k] * load_f32(s.vec[k], s.vec_t[k], i);
            acc = acc + m;
        }
        store_f32(s.out, s.out_t, i, acc);
        const int64_t idx = c.offset + i;
        const bool up = (bl.get(c, idx) >> element_bits(c, idx)) & 1u;
        store_bits(s.out, s.out_t, i, code_move(load_bits(s.out, s.out_t, i), up, f));
    }
}

FPCORE_TARGET_AVX512 __attribute__((always_inline)) inline __m512i fmix512(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 13));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0xC2B2AE35u)));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

// Hashes of groups q0 .. q0+15, and the elements they cover: [4 q0, 4 q0 + 64).
struct Window512 {
    int64_t q0 = INT64_MIN / 8;  // no window yet: the first use computes one
    __m512i h;
};

// Hashes of groups q0 .. q0+15 (inlined: the fast paths below hash the next window while the current
// one is used, so the multiply chain overlaps the loads and stores).
FPCORE_TARGET_AVX512 __attribute__((always_inline)) inline __m512i hash_window512(const CodeParams& c, int64_t q0) {
    const uint64_t u = static_cast<uint64_t>(q0);
    if ((u >> 32) == ((u + 15) >> 32)) [[likely]] {
        const __m512i lo = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(u))),
                                            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        const __m512i k2h = _mm512_set1_epi32(static_cast<int>(c.k2 + static_cast<uint32_t>(u >> 32) * kGolden));
        return fmix512(_mm512_xor_si512(fmix512(_mm512_xor_si512(lo, _mm512_set1_epi32(static_cast<int>(c.k1)))), k2h));
    }
    alignas(64) uint32_t h[16];  // the window straddles 2^32 groups
    for (int l = 0; l < 16; ++l) h[l] = group_hash(c, q0 + l);
    return _mm512_load_si512(h);
}

FPCORE_TARGET_AVX512 inline void window512(const CodeParams& c, int64_t q0, Window512& w) {
    w.q0 = q0;
    w.h = hash_window512(c, q0);
}

// Stored bits of 16 results as 32-bit lanes.
template <int OT>
FPCORE_TARGET_AVX512 inline __m512i bits16(__m512 acc, DType out_t) {
    switch (pick_t(OT, out_t)) {
        case DType::F32: return _mm512_castps_si512(acc);
        case DType::BF16: return _mm512_srli_epi32(bf16_hi16(acc), 16);
        case DType::F16: return _mm512_cvtepu16_epi32(to_f16_16(acc));
    }
    return _mm512_setzero_si512();
}

// The code's move on lanes x (elements idx0 .. idx0+15).
FPCORE_TARGET_AVX512 inline __m512i code16(__m512i x, const CodeParams& c, const CodeFormat& f, BlockLut& bl,
                                           Window512& w, int64_t idx0) {
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    if ((idx0 >> 2) < w.q0 || ((idx0 + 15) >> 2) >= w.q0 + 16) window512(c, idx0 >> 2, w);
    const __m512i pos = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(idx0 - 4 * w.q0)), iota);  // 0..63
    const __m512i hv = _mm512_permutexvar_epi32(_mm512_srli_epi32(pos, 2), w.h);
    const __m512i shift = _mm512_slli_epi32(
        _mm512_and_si512(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(idx0 & 3)), iota), _mm512_set1_epi32(3)),
        3);
    const __m512i bits = _mm512_and_si512(_mm512_srlv_epi32(hv, shift), _mm512_set1_epi32(31));
    __m512i lut;
    if (!straddles_block(idx0, 16)) {
        lut = _mm512_set1_epi32(static_cast<int>(bl.get(c, idx0)));
    } else {
        alignas(64) uint32_t la[16];
        for (int l = 0; l < 16; ++l) la[l] = kPatternLut[c.symbols[code_segment(c, idx0 + l)] & 15u];
        lut = _mm512_load_si512(la);
    }
    const __mmask16 up = _mm512_test_epi32_mask(_mm512_srlv_epi32(lut, bits), _mm512_set1_epi32(1));
    const __m512i step = _mm512_set1_epi32(static_cast<int>(f.step));
    const __m512i mag = _mm512_and_si512(x, _mm512_set1_epi32(static_cast<int>(f.magmask)));
    // step < mag < inf - step  <=>  mag - step - 1 < inf - 2 step - 1 (unsigned)
    const __mmask16 ok = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(mag, _mm512_set1_epi32(static_cast<int>(f.step + 1))),
                                                 _mm512_set1_epi32(static_cast<int>(f.inf - 2 * f.step - 1)));
    const __m512i delta = _mm512_mask_blend_epi32(up, _mm512_sub_epi32(_mm512_setzero_si512(), step), step);
    return _mm512_mask_add_epi32(x, ok, x, delta);
}

// Stores the first `count` lanes (all 16 when Full; Stream: out + i is aligned to the store's width).
template <int OT, bool Full, bool Stream>
FPCORE_TARGET_AVX512 inline void store_bits16(void* out, DType out_t, int64_t i, __m512i x, int count) {
    const __mmask16 mk = static_cast<__mmask16>((1u << count) - 1u);
    if (pick_t(OT, out_t) == DType::F32) {
        float* p = static_cast<float*>(out) + i;
        if (!Full) {
            _mm512_mask_storeu_epi32(p, mk, x);
        } else if (Stream) {
            _mm512_stream_si512(reinterpret_cast<__m512i*>(p), x);
        } else {
            _mm512_storeu_si512(p, x);
        }
        return;
    }
    const __m256i r = _mm512_cvtepi32_epi16(x);
    uint16_t* p = static_cast<uint16_t*>(out) + i;
    if (!Full) {
        _mm256_mask_storeu_epi16(p, mk, r);
    } else if (Stream) {
        _mm256_stream_si256(reinterpret_cast<__m256i*>(p), r);
    } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), r);
    }
}

template <int OT, int BT, int VT, int NV>
FPCORE_TARGET_AVX512 inline void part512_code(const StampTask& s, const __m512* a, int nvec, const CodeFormat& f,
                                              BlockLut& bl, Window512& w, int64_t i, int64_t count) {
    while (count > 0) {
        const int n = static_cast<int>(std::min<int64_t>(count, 16));
        const __m512i x = code16(bits16<OT>(combine16<BT, VT, NV, true>(s, a, nvec, i, n), s.out_t), *s.code, f, bl, w,
                                 s.code->offset + i);
        store_bits16<OT, false, false>(s.out, s.out_t, i, x, n);
        i += n;
        count -= n;
    }
}

// 32 elements at i of a 16-bit output whose 32 hash bytes are `bytes` (byte k: element i + k; the element
// index offset + i a multiple of 4 and the 32 within one block): the 32 stored values as 16-bit lanes, each
// element's 5 bits straight from its byte, its move from the block pattern's delta table.
template <int OT, int BT, int VT, int NV, bool Stream>
FPCORE_TARGET_AVX512 __attribute__((always_inline)) inline void step512_code16(const StampTask& s, const __m512* a,
                                                                               int nvec, __m256i bytes,
                                                                               const int16_t* delta, int64_t i) {
    const __m512 lo = combine16<BT, VT, NV, false>(s, a, nvec, i, 16);
    const __m512 hi = combine16<BT, VT, NV, false>(s, a, nvec, i + 16, 16);
    __m512i r;
    if (pick_t(OT, s.out_t) == DType::BF16) {
        const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29, 27,
                                             25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        r = _mm512_permutex2var_epi16(bf16_hi16(lo), odd, bf16_hi16(hi));
    } else {
        r = _mm512_inserti64x4(_mm512_castsi256_si512(to_f16_16(lo)), to_f16_16(hi), 1);
    }
    const __m512i bits = _mm512_and_si512(_mm512_cvtepu8_epi16(bytes), _mm512_set1_epi16(31));
    const __m512i d = _mm512_permutexvar_epi16(bits, _mm512_load_si512(delta));
    const __m512i mag = _mm512_and_si512(r, _mm512_set1_epi16(0x7FFF));
    const int16_t inf = pick_t(OT, s.out_t) == DType::BF16 ? 0x7F80 : 0x7C00;
    // 1 < mag < inf - 1  <=>  mag - 2 < inf - 3 (unsigned 16-bit)
    const __mmask32 ok =
        _mm512_cmplt_epu16_mask(_mm512_sub_epi16(mag, _mm512_set1_epi16(2)), _mm512_set1_epi16(inf - 3));
    r = _mm512_mask_add_epi16(r, ok, r, d);
    uint16_t* p = static_cast<uint16_t*>(s.out) + i;
    if (Stream) {
        _mm512_stream_si512(reinterpret_cast<__m512i*>(p), r);
    } else {
        _mm512_storeu_si512(p, r);
    }
}

// 64 elements at i of an fp32 output whose 64 hash bytes are h (byte k: element i + k; offset + i a
// multiple of 4 and the 64 within one block): each element's 5 bits straight from its byte, its move
// +-step from the block's pattern.
template <int BT, int VT, int NV, bool Stream>
FPCORE_TARGET_AVX512 __attribute__((always_inline)) inline void step512_code32(const StampTask& s, const __m512* a,
                                                                               int nvec, const CodeFormat& f, __m512i h,
                                                                               uint32_t lut, int64_t i) {
    const __m512i lutv = _mm512_set1_epi32(static_cast<int>(lut));
    const __m512i step = _mm512_set1_epi32(static_cast<int>(f.step));
    const __m512i nstep = _mm512_sub_epi32(_mm512_setzero_si512(), step);
    const __m512i lo = _mm512_set1_epi32(static_cast<int>(f.step + 1));
    const __m512i span = _mm512_set1_epi32(static_cast<int>(f.inf - 2 * f.step - 1));
    const __m512i m31 = _mm512_set1_epi32(31);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i magmask = _mm512_set1_epi32(0x7FFFFFFF);
    float* out = static_cast<float*>(s.out) + i;
    auto one16 = [&](int j, __m128i bytes) FPCORE_TARGET_AVX512 {
        __m512i x = _mm512_castps_si512(combine16<BT, VT, NV, false>(s, a, nvec, i + 16 * j, 16));
        const __m512i bits = _mm512_and_si512(_mm512_cvtepu8_epi32(bytes), m31);
        const __mmask16 up = _mm512_test_epi32_mask(_mm512_srlv_epi32(lutv, bits), one);
        const __m512i mag = _mm512_and_si512(x, magmask);
        const __mmask16 ok = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(mag, lo), span);
        x = _mm512_mask_add_epi32(x, ok, x, _mm512_mask_blend_epi32(up, nstep, step));
        if (Stream) {
            _mm512_stream_si512(reinterpret_cast<__m512i*>(out + 16 * j), x);
        } else {
            _mm512_storeu_si512(out + 16 * j, x);
        }
    };
    one16(0, _mm512_castsi512_si128(h));
    one16(1, _mm512_extracti32x4_epi32(h, 1));
    one16(2, _mm512_extracti32x4_epi32(h, 2));
    one16(3, _mm512_extracti32x4_epi32(h, 3));
}

template <int OT, int BT, int VT, int NV, bool Stream>
FPCORE_TARGET_AVX512 void range512_code(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e) {
    const int nv = NV == kAny ? nvec : NV;
    __m512 a[kMaxVectors];
    for (int k = 0; k < nv; ++k) a[k] = _mm512_set1_ps(alphas[k]);
    const CodeFormat f = code_format(s.out_t, s.code->fp32_step);
    BlockLut bl;
    Window512 w;
    int64_t i = b;
    if (Stream) {
        const int64_t osize = dtype_size(pick_t(OT, s.out_t));
        const uintptr_t addr = reinterpret_cast<uintptr_t>(s.out) + static_cast<uintptr_t>(i * osize);
        const int64_t head = std::min<int64_t>(static_cast<int64_t>((64 - addr % 64) % 64) / osize, e - i);
        part512_code<OT, BT, VT, NV>(s, a, nvec, f, bl, w, i, head);
        i += head;
    }
    const int64_t off = s.code->offset;
    if ((off + i) % 4 == 0 && i + 64 <= e) {  // the fast paths: 64 elements per window of 16 hashes
        const CodeParams& c = *s.code;
        __m512i h = hash_window512(c, (off + i) >> 2);
        for (; i + 64 <= e; i += 64) {
            const int64_t idx0 = off + i;
            const __m512i next = hash_window512(c, (idx0 >> 2) + 16);  // independent of this step's work
            prefetch_inputs<BT, VT>(s, nv, i, 64);
            if (straddles_block(idx0, 64)) {
                part512_code<OT, BT, VT, NV>(s, a, nvec, f, bl, w, i, 64);
            } else if (pick_t(OT, s.out_t) == DType::F32) {
                step512_code32<BT, VT, NV, Stream>(s, a, nvec, f, h, bl.get(c, idx0), i);
            } else {
                const int16_t* delta = kDelta16.d[bl.symbol(c, idx0)];
                step512_code16<OT, BT, VT, NV, Stream>(s, a, nvec, _mm512_castsi512_si256(h), delta, i);
                step512_code16<OT, BT, VT, NV, Stream>(s, a, nvec, _mm512_extracti64x4_epi64(h, 1), delta, i + 32);
            }
            h = next;
        }
    }
    for (; i + 16 <= e; i += 16) {
        prefetch_inputs<BT, VT>(s, nv, i, 16);
        const __m512i x = code16(bits16<OT>(combine16<BT, VT, NV, false>(s, a, nvec, i, 16), s.out_t), *s.code, f, bl,
                                 w, s.code->offset + i);
        store_bits16<OT, true, Stream>(s.out, s.out_t, i, x, 16);
    }
    part512_code<OT, BT, VT, NV>(s, a, nvec, f, bl, w, i, e - i);
    if (Stream) _mm_sfence();
}

FPCORE_TARGET_AVX2 inline __m256i fmix256(__m256i x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 13));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0xC2B2AE35u)));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

// Hashes of groups q0 .. q0+7 (elements [4 q0, 4 q0 + 32)).
FPCORE_TARGET_AVX2 inline __m256i window256(const CodeParams& c, int64_t q0) {
    const uint64_t u = static_cast<uint64_t>(q0);
    if ((u >> 32) == ((u + 7) >> 32)) {
        const __m256i lo = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(u))),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256i k2h = _mm256_set1_epi32(static_cast<int>(c.k2 + static_cast<uint32_t>(u >> 32) * kGolden));
        return fmix256(_mm256_xor_si256(fmix256(_mm256_xor_si256(lo, _mm256_set1_epi32(static_cast<int>(c.k1)))), k2h));
    }
    alignas(32) uint32_t h[8];
    for (int l = 0; l < 8; ++l) h[l] = group_hash(c, q0 + l);
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(h));
}

template <int OT, int BT, int VT, int NV, bool Stream>
FPCORE_TARGET_AVX2 void range256_code(const StampTask& s, const float* alphas, int nvec, int64_t b, int64_t e) {
    const int nv = NV == kAny ? nvec : NV;
    __m256 a[kMaxVectors];
    for (int k = 0; k < nv; ++k) a[k] = _mm256_set1_ps(alphas[k]);
    const CodeParams& c = *s.code;
    const CodeFormat f = code_format(s.out_t, c.fp32_step);
    const DType ot = pick_t(OT, s.out_t);
    BlockLut bl;
    int64_t i = b;
    if (Stream) {
        const int64_t osize = dtype_size(ot);
        const uintptr_t addr = reinterpret_cast<uintptr_t>(s.out) + static_cast<uintptr_t>(i * osize);
        const int64_t head = std::min<int64_t>(static_cast<int64_t>((64 - addr % 64) % 64) / osize, e - i);
        range_scalar_code(s, alphas, nvec, i, i + head);
        i += head;
    }
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i stepv = _mm256_set1_epi32(static_cast<int>(f.step));
    const __m256i negstep = _mm256_set1_epi32(-static_cast<int>(f.step));
    const __m256i magmask = _mm256_set1_epi32(static_cast<int>(f.magmask));
    const __m256i top = _mm256_set1_epi32(static_cast<int>(f.inf - f.step));
    int64_t q0 = INT64_MIN / 8;  // window: hashes of groups q0 .. q0+7 (elements [4 q0, 4 q0 + 32)); none yet
    __m256i wh = _mm256_setzero_si256();
    if (ot != DType::F32 && (c.offset + i) % 4 == 0) {
        // 16-bit outputs, 16 per step: each element's 5 bits are byte k of the window's hashes, its move
        // comes from the pattern's int8 table by two byte shuffles (bits 0-3) and a blend (bit 4).
        const __m128i low4 = _mm_set1_epi8(15);
        const __m128i bit4 = _mm_set1_epi8(16);
        const __m256i mag16 = _mm256_set1_epi16(0x7FFF);
        const __m256i one16 = _mm256_set1_epi16(1);
        const __m256i top16 = _mm256_set1_epi16(static_cast<int16_t>(f.inf - 1));
        for (; i + 16 <= e; i += 16) {
            const int64_t idx0 = c.offset + i;
            if (straddles_block(idx0, 16)) {
                range_scalar_code(s, alphas, nvec, i, i + 16);
                continue;
            }
            prefetch_inputs<BT, VT>(s, nv, i, 16);
            const __m256 lo = combine8<BT, VT, NV>(s, a, nvec, i);
            const __m256 hi = combine8<BT, VT, NV>(s, a, nvec, i + 8);
            __m256i r;
            if (ot == DType::BF16) {
                const __m256i w2 =
                    _mm256_packus_epi32(_mm256_srli_epi32(bf16_hi16_8(lo), 16), _mm256_srli_epi32(bf16_hi16_8(hi), 16));
                r = _mm256_permute4x64_epi64(w2, 0xD8);
            } else {
                r = _mm256_set_m128i(_mm256_cvtps_ph(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                     _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            }
            if (idx0 != 4 * q0 && idx0 != 4 * q0 + 16) {
                q0 = idx0 >> 2;
                wh = window256(c, q0);
            }
            const __m128i bytes = idx0 == 4 * q0 ? _mm256_castsi256_si128(wh) : _mm256_extracti128_si256(wh, 1);
            const int8_t* t = kDelta8.d[bl.symbol(c, idx0)];
            const __m128i idx4 = _mm_and_si128(bytes, low4);
            const __m128i d_lo = _mm_shuffle_epi8(_mm_load_si128(reinterpret_cast<const __m128i*>(t)), idx4);
            const __m128i d_hi = _mm_shuffle_epi8(_mm_load_si128(reinterpret_cast<const __m128i*>(t + 16)), idx4);
            const __m128i d8 = _mm_blendv_epi8(d_lo, d_hi, _mm_cmpeq_epi8(_mm_and_si128(bytes, bit4), bit4));
            const __m256i d = _mm256_cvtepi8_epi16(d8);
            const __m256i mag = _mm256_and_si256(r, mag16);
            const __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi16(mag, one16), _mm256_cmpgt_epi16(top16, mag));
            r = _mm256_add_epi16(r, _mm256_and_si256(ok, d));
            __m256i* p = reinterpret_cast<__m256i*>(static_cast<uint16_t*>(s.out) + i);
            if (Stream) {
                _mm256_stream_si256(p, r);
            } else {
                _mm256_storeu_si256(p, r);
            }
        }
    }
    for (; i + 8 <= e; i += 8) {
        const int64_t idx0 = c.offset + i;
        const uint64_t qa = static_cast<uint64_t>(idx0 >> 2);
        if (straddles_block(idx0, 8) || (qa >> 32) != ((qa + 8) >> 32)) {  // rare: scalar
            range_scalar_code(s, alphas, nvec, i, i + 8);
            continue;
        }
        if ((idx0 >> 2) < q0 || ((idx0 + 7) >> 2) >= q0 + 8) {
            q0 = idx0 >> 2;
            wh = window256(c, q0);
        }
        prefetch_inputs<BT, VT>(s, nv, i, 8);
        const __m256 acc = combine8<BT, VT, NV>(s, a, nvec, i);
        __m256i x;
        switch (ot) {
            case DType::F32: x = _mm256_castps_si256(acc); break;
            case DType::BF16: x = _mm256_srli_epi32(bf16_hi16_8(acc), 16); break;
            default: x = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(acc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        }
        const __m256i pos = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(idx0 - 4 * q0)), iota);
        const __m256i hv = _mm256_permutevar8x32_epi32(wh, _mm256_srli_epi32(pos, 2));
        const __m256i shift = _mm256_slli_epi32(_mm256_and_si256(pos, _mm256_set1_epi32(3)), 3);
        const __m256i bits = _mm256_and_si256(_mm256_srlv_epi32(hv, shift), _mm256_set1_epi32(31));
        const __m256i lut = _mm256_set1_epi32(static_cast<int>(bl.get(c, idx0)));
        const __m256i up = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_srlv_epi32(lut, bits), one), one);
        // Signed compares are exact here: every operand is below 2^31.
        const __m256i mag = _mm256_and_si256(x, magmask);
        const __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi32(mag, stepv), _mm256_cmpgt_epi32(top, mag));
        x = _mm256_add_epi32(x, _mm256_and_si256(ok, _mm256_blendv_epi8(negstep, stepv, up)));
        if (ot == DType::F32) {
            float* p = static_cast<float*>(s.out) + i;
            if (Stream) {
                _mm256_stream_si256(reinterpret_cast<__m256i*>(p), x);
            } else {
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x);
            }
        } else {
            // packus: [x0-3 x0-3 | x4-7 x4-7] as 16-bit; qwords 0 and 2 hold x0..x7 in order.
            const __m128i r = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(x, x), 0x08));
            __m128i* p = reinterpret_cast<__m128i*>(static_cast<uint16_t*>(s.out) + i);
            if (Stream) {
                _mm_stream_si128(p, r);
            } else {
                _mm_storeu_si128(p, r);
            }
        }
    }
    range_scalar_code(s, alphas, nvec, i, e);
    if (Stream) _mm_sfence();
}

struct Avx512Code {
    template <int OT, int BT, int VT, int NV, bool Stream>
    static RangeFn get() {
        return &range512_code<OT, BT, VT, NV, Stream>;
    }
};

struct Avx2Code {
    template <int OT, int BT, int VT, int NV, bool Stream>
    static RangeFn get() {
        return &range256_code<OT, BT, VT, NV, Stream>;
    }
};

// ---------------------------------------------------------------------------------------------------------
// Dispatch: one function per task, chosen once per call.

template <class Isa, int OT, int BT, int VT, bool Stream>
RangeFn pick_nv(int nvec) {
    return nvec == 1 ? Isa::template get<OT, BT, VT, 1, Stream>() : Isa::template get<OT, BT, VT, kAny, Stream>();
}

template <class Isa, bool Stream>
RangeFn pick_isa(const StampTask& s, int nvec) {
    int vt = nvec > 0 ? static_cast<int>(s.vec_t[0]) : kAny;
    for (int k = 1; k < nvec; ++k) {
        if (static_cast<int>(s.vec_t[k]) != vt) vt = kAny;
    }
    const int ot = static_cast<int>(s.out_t);
    const int bt = static_cast<int>(s.base_t);
    // Hot combinations (bf16 / fp32 / f16 models and fp32 or bf16 fingerprint vectors).
    if (ot == kBF16 && bt == kBF16 && vt == kBF16) return pick_nv<Isa, kBF16, kBF16, kBF16, Stream>(nvec);
    if (ot == kBF16 && bt == kBF16 && vt == kF32) return pick_nv<Isa, kBF16, kBF16, kF32, Stream>(nvec);
    if (ot == kF32 && bt == kF32 && vt == kF32) return pick_nv<Isa, kF32, kF32, kF32, Stream>(nvec);
    if (ot == kF32 && bt == kF32 && vt == kBF16) return pick_nv<Isa, kF32, kF32, kBF16, Stream>(nvec);
    if (ot == kF16 && bt == kF16 && vt == kF16) return pick_nv<Isa, kF16, kF16, kF16, Stream>(nvec);
    if (ot == kF16 && bt == kF16 && vt == kF32) return pick_nv<Isa, kF16, kF16, kF32, Stream>(nvec);
    // Everything else: run-time dtype switch per vector load.
    return Isa::template get<kAny, kAny, kAny, kAny, Stream>();
}

RangeFn pick(Simd level, const StampTask& s, int nvec, bool stream) {
    if (s.code != nullptr) {
        switch (level) {
            case Simd::Avx512:
                return stream ? pick_isa<Avx512Code, true>(s, nvec) : pick_isa<Avx512Code, false>(s, nvec);
            case Simd::Avx2: return stream ? pick_isa<Avx2Code, true>(s, nvec) : pick_isa<Avx2Code, false>(s, nvec);
            case Simd::Scalar: break;
        }
        return &range_scalar_code;
    }
    switch (level) {
        case Simd::Avx512: return stream ? pick_isa<Avx512, true>(s, nvec) : pick_isa<Avx512, false>(s, nvec);
        case Simd::Avx2: return stream ? pick_isa<Avx2, true>(s, nvec) : pick_isa<Avx2, false>(s, nvec);
        case Simd::Scalar: break;
    }
    return &range_scalar;
}

}  // namespace

void stamp_many(const StampTask* tasks, int64_t ntasks, const float* alphas, int nvec) {
    if (ntasks <= 0 || nvec < 0) return;
    const Simd level = simd_active();

    int64_t total_elems = 0, out_bytes = 0;
    for (int64_t t = 0; t < ntasks; ++t) {
        total_elems += tasks[t].n;
        out_bytes += tasks[t].n * dtype_size(tasks[t].out_t);
    }
    if (total_elems == 0) return;
    int nth = 1;
#ifdef _OPENMP
    nth = static_cast<int>(std::min<int64_t>(num_threads(), std::max<int64_t>(1, total_elems / kMinElemsPerThread)));
#endif

    // Streaming stores when the whole output is large and the task is out of place (in place, the line
    // being overwritten was just read, so an ordinary store costs no extra read).
    const bool big = out_bytes >= kStreamMinBytes;
    std::vector<RangeFn> fn(static_cast<size_t>(ntasks));
    for (int64_t t = 0; t < ntasks; ++t) {
        const StampTask& s = tasks[t];
        const bool aligned = reinterpret_cast<uintptr_t>(s.out) % static_cast<uintptr_t>(dtype_size(s.out_t)) == 0;
        fn[t] = pick(level, s, nvec, big && s.out != s.base && aligned);
    }

    if (nth <= 1) {
        for (int64_t t = 0; t < ntasks; ++t) {
            if (tasks[t].n > 0) fn[t](tasks[t], alphas, nvec, 0, tasks[t].n);
        }
        return;
    }
#ifdef _OPENMP
    // The flat list of chunks: task t is cut into chunks first_chunk[t] .. first_chunk[t+1]-1 of `chunk`
    // elements (its last one shorter); a chunk never crosses a task boundary. About kChunksPerThread chunks
    // per thread, so a thread slowed down by a neighbour on this shared machine is made up for by the others.
    const int64_t chunk = std::clamp<int64_t>(total_elems / (nth * kChunksPerThread) / 64 * 64, kMinChunk, kMaxChunk);
    std::vector<int64_t> first_chunk(static_cast<size_t>(ntasks) + 1, 0);
    for (int64_t t = 0; t < ntasks; ++t) first_chunk[t + 1] = first_chunk[t] + (tasks[t].n + chunk - 1) / chunk;
    const int64_t nchunks = first_chunk[ntasks];

    // Chunks are handed out in order, one at a time (dynamic), so neighbouring chunks run at about the same
    // time and a thread's chunk is a long sequential stream for the prefetchers.
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t t = std::upper_bound(first_chunk.begin(), first_chunk.end(), c) - first_chunk.begin() - 1;
        const int64_t b = (c - first_chunk[t]) * chunk;  // first_chunk[t] <= c < first_chunk[t+1]
        fn[t](tasks[t], alphas, nvec, b, std::min(b + chunk, tasks[t].n));
    }
#endif
}

}  // namespace kernels
}  // namespace fpcore
