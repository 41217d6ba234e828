// trace_sums: a suspect's correlation with every one of the 16 patterns of each segment of the licensee
// code (fpcore/code.h; spec and twin: fpcore/backends/reference/code.py), in one pass over the suspect
// and its reference. Per element: the move size u at the reference, w = (s - r) * sign(r) * u in fp32
// (as the spec), then per segment W += w, Q += w^2, U += u^2, and w is added to a histogram over the
// element's 5 random bits b; at the block's end A[p] += the histogram's sum over the b whose parity
// under pattern p's mask is 1 (all 16 patterns from 32 bins). Blocks of 4096 elements lie in one
// segment each; a block's sums are fp64, added to the thread's table; the threads' tables are added
// in thread order at the end.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "fpcore/code.h"
#include "fpcore/cpu.h"
#include "fpcore/dtype.h"
#include "fpcore/kernels.h"

namespace fpcore {
namespace kernels {

namespace {

constexpr int kCols = kPatterns + 3;  // A[0..15], W, Q, U

// Elements [b, e) of the chunk (all in one code block) added to row `t` (kCols doubles).
void block_sums(const void* s, DType st, const void* r, DType rt, const CodeParams& c, const CodeFormat& f, int64_t b,
                int64_t e, double* t) {
    double hist[32] = {0};
    double w_sum = 0, q_sum = 0, u_sum = 0;
    int64_t q_cached = -1;
    uint32_t h = 0;
    for (int64_t i = b; i < e; ++i) {
        const uint32_t rb = load_bits(r, rt, i);
        const uint32_t mag = rb & f.magmask;
        if (mag <= f.step || mag >= f.inf - f.step) continue;
        const int64_t idx = c.offset + i;
        if ((idx >> 2) != q_cached) {
            q_cached = idx >> 2;
            h = group_hash(c, q_cached);
        }
        const uint32_t bits = (h >> (8 * (idx & 3))) & 31u;
        const float rv = bits_value(rb, rt);
        const float u = bits_value(mag + f.step, rt) - bits_value(mag, rt);
        const float d = load_f32(s, st, i) - rv;
        const float w = d * (rv < 0.0f ? -u : u);
        const double wd = w;
        w_sum += wd;
        q_sum += wd * wd;
        u_sum += static_cast<double>(u) * u;
        hist[bits] += wd;
    }
    for (int p = 0; p < kPatterns; ++p) {
        const uint32_t lut = pattern_lut(static_cast<uint32_t>(p));
        double a = 0.0;
        for (int bb = 0; bb < 32; ++bb) a += ((lut >> bb) & 1u) ? hist[bb] : 0.0;
        t[p] += a;
    }
    t[kPatterns] += w_sum;
    t[kPatterns + 1] += q_sum;
    t[kPatterns + 2] += u_sum;
}

}  // namespace

void trace_sums(const void* s, DType st, const void* r, DType rt, int64_t n, const CodeParams& c, double* A, double* W,
                double* Q, double* U) {
    if (n <= 0) return;
    const int S = 1 << c.seg_bits;
    const CodeFormat f = code_format(rt, c.fp32_step);
    // Blocks of the chunk: [start_k, start_k+1) cut at the code's 4096-element boundaries.
    const int64_t block = int64_t{1} << kCodeBlockBits;
    const int64_t first_end = std::min<int64_t>(n, (c.offset / block + 1) * block - c.offset);
    const int64_t nblocks = 1 + (n - first_end + block - 1) / block;
    int nth = 1;
#ifdef _OPENMP
    nth = static_cast<int>(std::min<int64_t>(num_threads(), std::max<int64_t>(1, nblocks / 4)));
#endif
    std::vector<double> tables(static_cast<size_t>(nth) * S * kCols, 0.0);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nth)
#endif
    for (int64_t k = 0; k < nblocks; ++k) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const int64_t b = k == 0 ? 0 : first_end + (k - 1) * block;
        const int64_t e = k == 0 ? first_end : std::min<int64_t>(n, b + block);
        const uint32_t seg = code_segment(c, c.offset + b);
        block_sums(s, st, r, rt, c, f, b, e, &tables[(static_cast<size_t>(tid) * S + seg) * kCols]);
    }
    for (int t = 0; t < nth; ++t) {
        for (int sg = 0; sg < S; ++sg) {
            const double* row = &tables[(static_cast<size_t>(t) * S + sg) * kCols];
            for (int p = 0; p < kPatterns; ++p) A[sg * kPatterns + p] += row[p];
            W[sg] += row[kPatterns];
            Q[sg] += row[kPatterns + 1];
            U[sg] += row[kPatterns + 2];
        }
    }
}

}  // namespace kernels
}  // namespace fpcore
