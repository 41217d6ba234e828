// The licensee code: scalar helpers shared by the stamp kernel's code path and the trace kernel.
// The spec (and its plain-torch twin) is fpcore/backends/reference/code.py; in short, with uint32
// wrapping arithmetic:
//   h   = fmix32(fmix32(lo32(i >> 2) ^ k1) ^ (k2 + hi32(i >> 2) * 0x9E3779B1))   one hash per 4 elements
//   b   = (h >> (8 * (i & 3))) & 31                                            the element's 5 bits
//   seg = fmix32(fmix32((i >> 12) ^ k3) ^ k2) >> (32 - seg_bits);   m = symbols[seg]
//   c   = parity(b & (2m + 1)) ? +1 : -1       (pattern_lut(m) has bit b set where c = +1)
//   on the output's stored bits x:  mag = x & magmask;  if step < mag < inf - step: x += c * step
#pragma once
#include <cstdint>

#include "fpcore/dtype.h"

namespace fpcore {

struct CodeParams {
    uint32_t k1, k2, k3;     // the tensor's keys
    const uint8_t* symbols;  // 1 << seg_bits patterns (0..15); unused by the trace kernel
    int seg_bits;            // 1..16
    uint32_t fp32_step;      // float32 outputs move by this many ulps (a power of two)
    int64_t offset;          // the element index (in its tensor) of the task's first element
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

// h of group q (elements 4q .. 4q+3).
inline uint32_t group_hash(const CodeParams& c, int64_t q) {
    const uint64_t u = static_cast<uint64_t>(q);
    const uint32_t k2h = c.k2 + static_cast<uint32_t>(u >> 32) * kGolden;
    return fmix32(fmix32(static_cast<uint32_t>(u) ^ c.k1) ^ k2h);
}

inline uint32_t element_bits(const CodeParams& c, int64_t idx) {
    return (group_hash(c, idx >> 2) >> (8 * (idx & 3))) & 31u;
}

// Bit b (0..31) set where parity(b & (2m + 1)) = 1: pattern m's sign (+1) for an element with bits b.
constexpr uint32_t pattern_lut(uint32_t m) {
    uint32_t lut = 0;
    for (uint32_t b = 0; b < 32; ++b) {
        uint32_t x = b & (2 * m + 1);
        x ^= x >> 4;
        x ^= x >> 2;
        x ^= x >> 1;
        lut |= (x & 1u) << b;
    }
    return lut;
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

// up: c = +1 (away from zero), else -1.
inline uint32_t code_move(uint32_t x, bool up, const CodeFormat& f) {
    const uint32_t mag = x & f.magmask;
    if (mag <= f.step || mag >= f.inf - f.step) return x;
    return up ? x + f.step : x - f.step;
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
