// Raw-pointer CPU kernels. No torch, no Python: pointers, sizes, dtypes, scalars.
#pragma once
#include <cstdint>

#include "fpcore/code.h"
#include "fpcore/dtype.h"

namespace fpcore {
namespace kernels {

constexpr int kMaxVectors = 8;

// One tensor of the elementwise family: out = base + a0*v0 + a1*v1 + ... (n elements, contiguous).
// out may equal base (in place); otherwise out must not overlap any input.
struct StampTask {
    void* out;
    DType out_t;
    const void* base;
    DType base_t;
    const void* vec[kMaxVectors];
    DType vec_t[kMaxVectors];
    int64_t n;
    const CodeParams* code = nullptr;  // a licensee code moved into the rounded output, or none
};

// Numerics (the spec; fpcore/backends/reference/stamp.py is its twin):
//   acc = f32(base); for k in 0..nvec-1: acc = acc + f32(alpha_k * f32(v_k))
// every multiply and add rounded to fp32 (no FMA contraction), then one rounding of acc to out's
// dtype (nearest even). alpha = -1 gives an exact subtraction, so extract uses this kernel too.
// All tasks' elements are shared among the threads as one flat range.
// With a task's `code` (fpcore/code.h), each rounded output element then moves by the code. nvec may
// be 0 when every task has a code (out = base converted, plus the code).
void stamp_many(const StampTask* tasks, int64_t ntasks, const float* alphas, int nvec);

// The trace sums of fpcore/backends/reference/code.py over n elements of a suspect s and its reference
// r (one tensor's chunk starting at element c.offset): A [S*16], W [S], Q [S], U [S] are ADDED to
// (S = 1 << c.seg_bits; c.symbols unused). Per element w is formed in fp32 exactly as the spec; sums
// in fp64 per block of 4096 elements, blocks summed per thread, threads in order (so the last bits
// may differ between thread counts; the reference is matched to ~1e-12 relative).
void trace_sums(const void* s, DType st, const void* r, DType rt, int64_t n, const CodeParams& c, double* A, double* W,
                double* Q, double* U);

// A contiguous run of n elements of one dtype: one tensor of a (possibly multi-tensor) vector.
struct Span {
    const void* ptr;
    DType t;
    int64_t n;
};

// Sums over x, y (each a list of ntensors spans, paired by position, equal lengths):
//   dot = <x,y>, xx = |x|^2, yy = |y|^2, l1 = sum|x-y|, l2sq = sum (x-y)^2, linf = max|x-y|.
// Accumulation (the reference does the same in spirit, see fpcore/backends/reference):
//   fp32 lanes over fixed blocks of kBlock elements, each block's partial widened to fp64 and the
//   block partials summed in fp64 in block order. Block boundaries do not depend on the thread
//   count, so results are identical for any number of threads.
constexpr int64_t kBlock = 4096;
struct PairSums {
    double dot, xx, yy, l1, l2sq, linf;
    int64_t n;
};
PairSums pair_stats(const Span* x, const Span* y, int64_t ntensors);

// Consecutive pairs of a trajectory: ckpt[t * ntensors + i] is tensor i of checkpoint t.
// Reads every checkpoint once. Outputs: norm2[T] (|theta_t|^2), and for t = 0..T-2 the pair
// (theta_t, theta_{t+1}): dot[t], l1[t], l2sq[t], linf[t].
void trajectory_consecutive(const Span* ckpt, int64_t T, int64_t ntensors, double* norm2, double* dot, double* l1,
                            double* l2sq, double* linf);

// All pairs: dot[i*T+j] = <theta_i, theta_j>, l2sq[i*T+j] = |theta_i - theta_j|^2 (computed from the
// differences directly, not from the Gram identity, so near checkpoints keep their precision).
// Works over blocks of elements held in cache, so each checkpoint is read from memory once.
void trajectory_all(const Span* ckpt, int64_t T, int64_t ntensors, double* dot, double* l2sq);

// Three vectors at once: d = x - y; dz = <d, z>, dd = |d|^2, zz = |z|^2, ee = |z - y|^2.
// matching_loss(start, reached, target) = dd/ee with x=reached, y=target, z=start;
// projection(suspect, base, vector) = dz/zz with x=suspect, y=base, z=vector.
struct TripleSums {
    double dz, dd, zz, ee;
    int64_t n;
};
TripleSums triple_stats(const Span* x, const Span* y, const Span* z, int64_t ntensors);

}  // namespace kernels
}  // namespace fpcore
