// Vector loads that widen any supported dtype to fp32 (exact), per SIMD level.
// Include only from kernel files; every function carries its target attribute.
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "fpcore/cpu.h"
#include "fpcore/dtype.h"

namespace fpcore {
namespace simd {

// 16 lanes: element i .. i+15 of p as fp32.
FPCORE_TARGET_AVX512 static inline __m512 load16(const void* p, DType t, int64_t i) {
    switch (t) {
        case DType::F32: return _mm512_loadu_ps(static_cast<const float*>(p) + i);
        case DType::BF16: {
            __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
            return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        case DType::F16: {
            __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
            return _mm512_cvtph_ps(h);
        }
    }
    return _mm512_setzero_ps();
}

// Masked form for tails: lanes past `count` read nothing and are 0.
FPCORE_TARGET_AVX512 static inline __m512 load16_tail(const void* p, DType t, int64_t i, int count) {
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1u);
    switch (t) {
        case DType::F32: return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
        case DType::BF16: {
            __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
            return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        case DType::F16: {
            __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
            return _mm512_cvtph_ps(h);
        }
    }
    return _mm512_setzero_ps();
}

// 8 lanes: element i .. i+7 of p as fp32.
FPCORE_TARGET_AVX2 static inline __m256 load8(const void* p, DType t, int64_t i) {
    switch (t) {
        case DType::F32: return _mm256_loadu_ps(static_cast<const float*>(p) + i);
        case DType::BF16: {
            __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        }
        case DType::F16: {
            __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
            return _mm256_cvtph_ps(h);
        }
    }
    return _mm256_setzero_ps();
}

}  // namespace simd
}  // namespace fpcore
