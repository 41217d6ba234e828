// stamp_many: the elementwise family (stamp, stamp_, extract and their multi-tensor forms).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"
#include "fpcore/kernels.h"

namespace fpcore {
namespace bindings {

namespace {

void stamp_many(const std::vector<uintptr_t>& out_ptrs, const std::vector<int32_t>& out_dtypes,
                const std::vector<uintptr_t>& base_ptrs, const std::vector<int32_t>& base_dtypes,
                const std::vector<std::vector<uintptr_t>>& vec_ptrs,
                const std::vector<std::vector<int32_t>>& vec_dtypes, const std::vector<float>& alphas,
                const std::vector<int64_t>& sizes, const std::vector<py::object>& codes) {
    const std::string op = "stamp";
    const size_t ntasks = sizes.size();
    const size_t nvec = alphas.size();
    std::vector<CodeParams> params;
    std::vector<std::string> symbols;
    if (!codes.empty()) {
        expect_len(op, "codes", codes, ntasks);
        params.resize(ntasks);
        symbols.resize(ntasks);
    }
    bool all_coded = !codes.empty();
    for (size_t i = 0; i < codes.size(); ++i) {
        if (codes[i].is_none()) {
            all_coded = false;
            continue;
        }
        const std::string idx = "code[" + std::to_string(i) + "]";
        params[i] = to_code(op, idx, codes[i], symbols[i], true);
    }
    const size_t min_vec = all_coded ? 0 : 1;
    if (nvec < min_vec || nvec > static_cast<size_t>(kernels::kMaxVectors)) {
        fail(op, "takes " + std::to_string(min_vec) + " to " + std::to_string(kernels::kMaxVectors) + " vectors, got " +
                     std::to_string(nvec));
    }
    expect_len(op, "out pointers", out_ptrs, ntasks);
    expect_len(op, "out dtypes", out_dtypes, ntasks);
    expect_len(op, "base pointers", base_ptrs, ntasks);
    expect_len(op, "base dtypes", base_dtypes, ntasks);
    expect_len(op, "vector pointer lists", vec_ptrs, nvec);
    expect_len(op, "vector dtype lists", vec_dtypes, nvec);
    std::vector<kernels::StampTask> tasks(ntasks);
    for (size_t i = 0; i < ntasks; ++i) {
        const std::string idx = "[" + std::to_string(i) + "]";
        kernels::StampTask& t = tasks[i];
        t.n = sizes[i];
        expect_ptr(op, "out" + idx, out_ptrs[i], t.n);
        expect_ptr(op, "base" + idx, base_ptrs[i], t.n);
        t.out = reinterpret_cast<void*>(out_ptrs[i]);
        t.out_t = to_dtype(op, "out" + idx, out_dtypes[i]);
        t.base = reinterpret_cast<const void*>(base_ptrs[i]);
        t.base_t = to_dtype(op, "base" + idx, base_dtypes[i]);
        for (size_t k = 0; k < nvec; ++k) {
            const std::string name = "vector " + std::to_string(k) + idx;
            expect_len(op, "vector " + std::to_string(k) + " pointers", vec_ptrs[k], ntasks);
            expect_len(op, "vector " + std::to_string(k) + " dtypes", vec_dtypes[k], ntasks);
            expect_ptr(op, name, vec_ptrs[k][i], t.n);
            t.vec[k] = reinterpret_cast<const void*>(vec_ptrs[k][i]);
            t.vec_t[k] = to_dtype(op, name, vec_dtypes[k][i]);
        }
        if (!codes.empty() && !codes[i].is_none()) t.code = &params[i];
    }
    py::gil_scoped_release release;
    kernels::stamp_many(tasks.data(), static_cast<int64_t>(ntasks), alphas.data(), static_cast<int>(nvec));
}

}  // namespace

void bind_stamp(py::module_& m) {
    m.def("stamp_many", &stamp_many, py::arg("out_ptrs"), py::arg("out_dtypes"), py::arg("base_ptrs"),
          py::arg("base_dtypes"), py::arg("vec_ptrs"), py::arg("vec_dtypes"), py::arg("alphas"), py::arg("sizes"),
          py::arg("codes") = std::vector<py::object>(),
          "out_i = base_i + sum_k alphas[k] * vec_ptrs[k][i] over contiguous buffers (fp32 math, one rounding).\n"
          "Pointers are raw addresses; dtype codes 0=float32, 1=bfloat16, 2=float16. The GIL is released.\n"
          "codes: empty, or per task None or (k1, k2, k3, symbols: bytes, seg_bits, fp32_step, offset):\n"
          "the licensee code moved into the rounded output (fpcore/code.h); with every task coded, no vector needed.");
}

}  // namespace bindings
}  // namespace fpcore
