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

void bind_stamp(py::module_& m);
void bind_pair_stats(py::module_& m);

}  // namespace bindings
}  // namespace fpcore
