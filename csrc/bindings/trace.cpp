// trace_sums: the licensee code's per-segment pattern sums over one chunk of a suspect and its reference.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>
#include <vector>

#include "common.h"
#include "fpcore/kernels.h"

namespace fpcore {
namespace bindings {

namespace {

using Sums = std::tuple<std::vector<double>, std::vector<double>, std::vector<double>, std::vector<double>>;

Sums trace_sums(uintptr_t s_ptr, int32_t s_dtype, uintptr_t r_ptr, int32_t r_dtype, int64_t n, const py::object& code) {
    const std::string op = "trace";
    expect_ptr(op, "suspect", s_ptr, n);
    expect_ptr(op, "reference", r_ptr, n);
    const DType st = to_dtype(op, "suspect", s_dtype);
    const DType rt = to_dtype(op, "reference", r_dtype);
    std::string store;
    const CodeParams c = to_code(op, "code", code, store, false);
    if (c.offset + n > (int64_t{1} << 44)) fail(op, "elements beyond 2^44 in one tensor");
    const size_t S = size_t{1} << c.seg_bits;
    std::vector<double> A(S * kPatterns, 0.0), W(S, 0.0), Q(S, 0.0), U(S, 0.0);
    {
        py::gil_scoped_release release;
        kernels::trace_sums(reinterpret_cast<const void*>(s_ptr), st, reinterpret_cast<const void*>(r_ptr), rt, n, c,
                            A.data(), W.data(), Q.data(), U.data());
    }
    return {A, W, Q, U};
}

}  // namespace

void bind_trace(py::module_& m) {
    m.def("trace_sums", &trace_sums, py::arg("s_ptr"), py::arg("s_dtype"), py::arg("r_ptr"), py::arg("r_dtype"),
          py::arg("n"), py::arg("code"),
          "(A [S*16], W [S], Q [S], U [S]) over n contiguous elements of suspect and reference (fpcore/code.h).\n"
          "code: (k1, k2, k3, symbols (unused), seg_bits, fp32_step, offset). The GIL is released.");
}

}  // namespace bindings
}  // namespace fpcore
