// Element types the CPU kernels understand, and exact scalar conversions.
//
// Conversions follow torch bit for bit on every finite value and infinity:
//   bf16 -> f32, f16 -> f32: exact.
//   f32 -> bf16, f32 -> f16: round to nearest, ties to even; subnormals kept (no flush to zero).
//   NaN -> bf16: 0x7FC0 (quiet); NaN -> f16: quiet NaN with the sign kept.
#pragma once
#include <cstdint>
#include <cstring>

namespace fpcore {

enum class DType : int32_t { F32 = 0, BF16 = 1, F16 = 2 };

inline bool dtype_valid(int32_t code) {
    return code >= 0 && code <= 2;
}

inline const char* dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "float32";
        case DType::BF16: return "bfloat16";
        case DType::F16: return "float16";
    }
    return "unknown";
}

inline int64_t dtype_size(DType t) {
    return t == DType::F32 ? 4 : 2;
}

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

static inline float bf16_to_f32(uint16_t h) {
    return bits_f32(static_cast<uint32_t>(h) << 16);
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;  // NaN
    u += 0x7FFFu + ((u >> 16) & 1u);                     // round to nearest even
    return static_cast<uint16_t>(u >> 16);
}

static inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            mant &= 0x3FFu;
            u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | mant << 13;
        }
    } else if (exp == 0x1F) {
        u = sign | 0x7F800000u | mant << 13;
    } else {
        u = sign | (exp + (127 - 15)) << 23 | mant << 13;
    }
    return bits_f32(u);
}

static inline uint16_t f32_to_f16(float f) {
    const uint32_t u = f32_bits(f);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00u | static_cast<uint16_t>((a >> 13) & 0x3FFu);  // NaN
    if (a >= 0x477FF000u) return sign | 0x7C00u;  // overflow (incl. values rounding up to inf)
    if (a < 0x38800000u) {                        // subnormal or zero in f16
        if (a < 0x33000000u) return sign;         // below half the smallest subnormal
        const uint32_t e = a >> 23;
        const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
        const uint32_t shift = 126 - e;  // 14..24 bits to drop (relative to 2^-24 units)
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1u);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return sign | static_cast<uint16_t>(r);
    }
    uint32_t r = a + 0xFFFu + ((a >> 13) & 1u);  // round mantissa to 10 bits, nearest even
    r -= (127u - 15u) << 23;
    return sign | static_cast<uint16_t>(r >> 13);
}

static inline float load_f32(const void* p, DType t, int64_t i) {
    switch (t) {
        case DType::F32: return static_cast<const float*>(p)[i];
        case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
        case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    }
    return 0.0f;
}

static inline void store_f32(void* p, DType t, int64_t i, float v) {
    switch (t) {
        case DType::F32: static_cast<float*>(p)[i] = v; break;
        case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
        case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    }
}

}  // namespace fpcore
