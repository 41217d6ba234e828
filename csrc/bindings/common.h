// Shared argument checks for the bindings. Every message names the op first.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fpcore/dtype.h"
#include "fpcore/kernels.h"

namespace fpcore {
namespace bindings {

namespace py = pybind11;

[[noreturn]] inline void fail(const std::string& op, const std::string& msg) {
    throw std::invalid_argument(op + ": " + msg);
}

// The one dtype check: names the op, the argument and the code it refused.
inline DType to_dtype(const std::string& op, const std::string& what, int32_t code) {
    if (!dtype_valid(code)) {
        throw py::type_error(op + ": " + what + " has dtype code " + std::to_string(code) +
                             "; expected 0 (float32), 1 (bfloat16) or 2 (float16)");
    }
    return static_cast<DType>(code);
}

template <typename T>
void expect_len(const std::string& op, const std::string& what, const std::vector<T>& v, size_t n) {
    if (v.size() != n) {
        fail(op, what + " has " + std::to_string(v.size()) + " entries, expected " + std::to_string(n));
    }
}

inline void expect_ptr(const std::string& op, const std::string& what, uintptr_t p, int64_t n) {
    if (n < 0) fail(op, what + " has negative size " + std::to_string(n));
    if (n > 0 && p == 0) fail(op, what + " is a null pointer with " + std::to_string(n) + " elements");
}

// One vector given as parallel lists of pointers, dtype codes and sizes -> Spans.
inline std::vector<kernels::Span> to_spans(const std::string& op, const std::string& what,
                                           const std::vector<uintptr_t>& ptrs, const std::vector<int32_t>& dtypes,
                                           const std::vector<int64_t>& sizes) {
    expect_len(op, what + " dtypes", dtypes, ptrs.size());
    expect_len(op, what + " pointers", ptrs, sizes.size());
    std::vector<kernels::Span> out(ptrs.size());
    for (size_t i = 0; i < ptrs.size(); ++i) {
        const std::string name = what + "[" + std::to_string(i) + "]";
        expect_ptr(op, name, ptrs[i], sizes[i]);
        out[i] = {reinterpret_cast<const void*>(ptrs[i]), to_dtype(op, name, dtypes[i]), sizes[i]};
    }
    return out;
}

// A licensee code given as (k1, k2, k3, symbols: bytes, seg_bits, fp32_step, offset). `store` keeps
// the symbols alive for the call. need_symbols: the stamp path reads 1 << seg_bits symbols (each < 16).
inline CodeParams to_code(const std::string& op, const std::string& what, const py::object& obj, std::string& store,
                          bool need_symbols) {
    py::tuple t;
    try {
        t = obj.cast<py::tuple>();
    } catch (const py::cast_error&) {
        fail(op, what + " must be a tuple (k1, k2, k3, symbols, seg_bits, fp32_step, offset)");
    }
    if (t.size() != 7) fail(op, what + " must have 7 fields, got " + std::to_string(t.size()));
    CodeParams c{};
    auto u32 = [&](size_t k, const char* name) {
        const int64_t v = t[k].cast<int64_t>();
        if (v < 0 || v > 0xFFFFFFFFll) fail(op, what + ": " + name + " must be a uint32, got " + std::to_string(v));
        return static_cast<uint32_t>(v);
    };
    c.k1 = u32(0, "k1");
    c.k2 = u32(1, "k2");
    c.k3 = u32(2, "k3");
    store = t[3].cast<std::string>();
    c.seg_bits = t[4].cast<int>();
    if (c.seg_bits < 1 || c.seg_bits > 16)
        fail(op, what + ": seg_bits must be 1..16, got " + std::to_string(c.seg_bits));
    c.fp32_step = u32(5, "fp32_step");
    if (c.fp32_step == 0 || (c.fp32_step & (c.fp32_step - 1)) != 0 || c.fp32_step > (1u << 20)) {
        fail(op, what + ": fp32_step must be a power of two up to 2^20, got " + std::to_string(c.fp32_step));
    }
    c.offset = t[6].cast<int64_t>();
    if (c.offset < 0) fail(op, what + ": offset must be >= 0");
    if (need_symbols) {
        if (store.size() != (size_t{1} << c.seg_bits)) {
            fail(op, what + ": symbols has " + std::to_string(store.size()) + " bytes, expected " +
                         std::to_string(size_t{1} << c.seg_bits));
        }
        for (unsigned char ch : store) {
            if (ch >= kPatterns) fail(op, what + ": a symbol is " + std::to_string(ch) + "; patterns are 0..15");
        }
    }
    c.symbols = reinterpret_cast<const uint8_t*>(store.data());
    return c;
}

void bind_stamp(py::module_& m);
void bind_trace(py::module_& m);
void bind_pair_stats(py::module_& m);

}  // namespace bindings
}  // namespace fpcore
