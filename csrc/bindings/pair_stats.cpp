// The reduction family: pair_stats, trajectory (consecutive / all pairs), triple_stats.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>

#include "common.h"
#include "fpcore/kernels.h"

namespace fpcore {
namespace bindings {

namespace {

using Ptrs = std::vector<uintptr_t>;
using Codes = std::vector<int32_t>;
using Sizes = std::vector<int64_t>;

py::tuple pair_stats(const Ptrs& xp, const Codes& xd, const Ptrs& yp, const Codes& yd, const Sizes& sizes) {
    const std::string op = "pair_stats";
    auto x = to_spans(op, "a", xp, xd, sizes);
    auto y = to_spans(op, "b", yp, yd, sizes);
    kernels::PairSums s;
    {
        py::gil_scoped_release release;
        s = kernels::pair_stats(x.data(), y.data(), static_cast<int64_t>(x.size()));
    }
    return py::make_tuple(s.dot, s.xx, s.yy, s.l1, s.l2sq, s.linf, s.n);
}

std::vector<kernels::Span> trajectory_spans(const std::string& op, const std::vector<Ptrs>& ptrs,
                                            const std::vector<Codes>& dtypes, const Sizes& sizes) {
    expect_len(op, "checkpoint dtype lists", dtypes, ptrs.size());
    std::vector<kernels::Span> all;
    all.reserve(ptrs.size() * sizes.size());
    for (size_t t = 0; t < ptrs.size(); ++t) {
        auto s = to_spans(op, "checkpoint " + std::to_string(t), ptrs[t], dtypes[t], sizes);
        all.insert(all.end(), s.begin(), s.end());
    }
    return all;
}

py::dict trajectory_consecutive(const std::vector<Ptrs>& ptrs, const std::vector<Codes>& dtypes, const Sizes& sizes) {
    const std::string op = "trajectory_stats";
    auto spans = trajectory_spans(op, ptrs, dtypes, sizes);
    const int64_t T = static_cast<int64_t>(ptrs.size());
    if (T < 2) fail(op, "mode 'consecutive' needs at least 2 checkpoints, got " + std::to_string(T));
    std::vector<double> norm2(T), dot(T - 1), l1(T - 1), l2sq(T - 1), linf(T - 1);
    {
        py::gil_scoped_release release;
        kernels::trajectory_consecutive(spans.data(), T, static_cast<int64_t>(sizes.size()), norm2.data(), dot.data(),
                                        l1.data(), l2sq.data(), linf.data());
    }
    py::dict d;
    d["norm2"] = norm2;
    d["dot"] = dot;
    d["l1"] = l1;
    d["l2sq"] = l2sq;
    d["linf"] = linf;
    return d;
}

py::tuple trajectory_all(const std::vector<Ptrs>& ptrs, const std::vector<Codes>& dtypes, const Sizes& sizes) {
    const std::string op = "trajectory_stats";
    auto spans = trajectory_spans(op, ptrs, dtypes, sizes);
    const int64_t T = static_cast<int64_t>(ptrs.size());
    if (T < 1) fail(op, "mode 'all' needs at least 1 checkpoint");
    std::vector<double> dot(T * T), l2sq(T * T);
    {
        py::gil_scoped_release release;
        kernels::trajectory_all(spans.data(), T, static_cast<int64_t>(sizes.size()), dot.data(), l2sq.data());
    }
    return py::make_tuple(dot, l2sq);
}

py::tuple triple_stats(const Ptrs& xp, const Codes& xd, const Ptrs& yp, const Codes& yd, const Ptrs& zp,
                       const Codes& zd, const Sizes& sizes) {
    const std::string op = "triple_stats";
    auto x = to_spans(op, "x", xp, xd, sizes);
    auto y = to_spans(op, "y", yp, yd, sizes);
    auto z = to_spans(op, "z", zp, zd, sizes);
    kernels::TripleSums s;
    {
        py::gil_scoped_release release;
        s = kernels::triple_stats(x.data(), y.data(), z.data(), static_cast<int64_t>(x.size()));
    }
    return py::make_tuple(s.dz, s.dd, s.zz, s.ee, s.n);
}

}  // namespace

void bind_pair_stats(py::module_& m) {
    m.def("pair_stats", &pair_stats, py::arg("a_ptrs"), py::arg("a_dtypes"), py::arg("b_ptrs"), py::arg("b_dtypes"),
          py::arg("sizes"), "(dot, |a|^2, |b|^2, l1, l2^2, linf, n) of two flattened vectors in one pass.");
    m.def("trajectory_consecutive", &trajectory_consecutive, py::arg("ptrs"), py::arg("dtypes"), py::arg("sizes"),
          "Consecutive-pair sums over T checkpoints (ptrs[t][i]); each checkpoint read once.");
    m.def("trajectory_all", &trajectory_all, py::arg("ptrs"), py::arg("dtypes"), py::arg("sizes"),
          "All-pairs dot and squared-l2 matrices (row-major T*T lists).");
    m.def("triple_stats", &triple_stats, py::arg("x_ptrs"), py::arg("x_dtypes"), py::arg("y_ptrs"), py::arg("y_dtypes"),
          py::arg("z_ptrs"), py::arg("z_dtypes"), py::arg("sizes"),
          "(<x-y,z>, |x-y|^2, |z|^2, |z-y|^2, n) in one pass.");
}

}  // namespace bindings
}  // namespace fpcore
