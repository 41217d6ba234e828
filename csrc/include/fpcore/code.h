// The licensee code: scalar helpers shared by the stamp kernel's code path and the trace kernel.
// The spec (and its plain-torch twin) is fpcore/backends/reference/code.py; in short, with uint32
// wrapping arithmetic:
//   h   = fmix32(fmix32(lo32(i) ^ k1) ^ (k2 + hi32(i) * 0x9E3779B1))
//   seg = fmix32(fmix32((i >> 12) ^ k3) ^ k2) >> (32 - seg_bits);   m = symbols[seg]
//   c   = (h >> 16) >= density ? 0 : ((h >> m) & 1 ? +1 : -1)
//   on the output's stored bits x:  mag = x & magmask;  if c && step < mag < inf - step: x += c * step
#pragma once
#include <cstdint>

#include "fpcore/dtype.h"

namespace fpcore {

struct CodeParams {
    uint32_t k1, k2, k3;       // the tensor's keys
    const uint8_t* symbols;    // 1 << seg_bits patterns (0..15); unused by the trace kernel
    int seg_bits;              // 1..16
    uint32_t density;          // 0..65536: coded when (h >> 16) < density
    uint32_t fp32_step;        // float32 outputs move by this many ulps (a power of two)
    int64_t offset;            // the element index (in its tensor) of the task's first element
};

constexpr int kCodeBlockBits = 12;
constexpr uint32_t kGolden = 0x9E3779B1u;
constexpr int kPatterns = 16;

inline uint32_t fmix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x85EBCA6Bu;
    x ^= x >> 13;
    x *= 0xC2B2AE35u;
    x ^= x >> 16;
    return x;
}

inline uint32_t code_hash(const CodeParams& c, int64_t idx) {
    const uint64_t u = static_cast<uint64_t>(idx);
    const uint32_t k2h = c.k2 + static_cast<uint32_t>(u >> 32) * kGolden;
    return fmix32(fmix32(static_cast<uint32_t>(u) ^ c.k1) ^ k2h);
}

inline uint32_t code_segment(const CodeParams& c, int64_t idx) {
    const uint32_t blk = static_cast<uint32_t>(static_cast<uint64_t>(idx) >> kCodeBlockBits);
    return fmix32(fmix32(blk ^ c.k3) ^ c.k2) >> (32 - c.seg_bits);
}

// The output format's stored-bits view: x lives in the low 16 or all 32 bits.
struct CodeFormat {
    uint32_t magmask, inf, step;
};

inline CodeFormat code_format(DType t, uint32_t fp32_step) {
    switch (t) {
        case DType::F32: return {0x7FFFFFFFu, 0x7F800000u, fp32_step};
        case DType::BF16: return {0x7FFFu, 0x7F80u, 1u};
        case DType::F16: return {0x7FFFu, 0x7C00u, 1u};
    }
    return {0, 0, 0};
}

// c: +1, -1 or 0.
inline uint32_t code_move(uint32_t x, int c, const CodeFormat& f) {
    const uint32_t mag = x & f.magmask;
    if (c == 0 || mag <= f.step || mag >= f.inf - f.step) return x;
    return c > 0 ? x + f.step : x - f.step;
}

inline int code_sign(uint32_t h, uint32_t m, uint32_t density) {
    if ((h >> 16) >= density) return 0;
    return ((h >> m) & 1u) ? 1 : -1;
}

inline uint32_t load_bits(const void* p, DType t, int64_t i) {
    return t == DType::F32 ? static_cast<const uint32_t*>(p)[i] : static_cast<const uint16_t*>(p)[i];
}

inline void store_bits(void* p, DType t, int64_t i, uint32_t x) {
    if (t == DType::F32) {
        static_cast<uint32_t*>(p)[i] = x;
    } else {
        static_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(x);
    }
}

inline float bits_value(uint32_t x, DType t) {
    switch (t) {
        case DType::F32: return bits_f32(x);
        case DType::BF16: return bf16_to_f32(static_cast<uint16_t>(x));
        case DType::F16: return f16_to_f32(static_cast<uint16_t>(x));
    }
    return 0.0f;
}

}  // namespace fpcore
