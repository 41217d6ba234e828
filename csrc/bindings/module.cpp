// PYBIND11_MODULE(_C): every op, plus what was built and what runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "common.h"
#include "fpcore/cpu.h"

namespace py = pybind11;

namespace {

py::dict build_info() {
    py::dict d;
#if defined(__clang__)
    d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = std::string("gcc ") + __VERSION__;
#else
    d["compiler"] = "unknown";
#endif
#ifdef _OPENMP
    d["openmp"] = true;
    d["openmp_version"] = static_cast<int>(_OPENMP);
#else
    d["openmp"] = false;
#endif
    d["simd_compiled"] = py::make_tuple("scalar", "avx2", "avx512");
    d["simd_detected"] = fpcore::simd_name(fpcore::simd_detected());
    d["simd_active"] = fpcore::simd_name(fpcore::simd_active());
    d["avx512bf16"] = fpcore::cpu_has_avx512bf16();
    d["threads"] = fpcore::num_threads();
    d["block"] = fpcore::kernels::kBlock;
    d["max_vectors"] = fpcore::kernels::kMaxVectors;
#ifdef FPCORE_BUILD_TYPE
    d["build_type"] = FPCORE_BUILD_TYPE;
#endif
    return d;
}

void set_simd(const std::string& name) {
    using fpcore::Simd;
    if (name == "auto") {
        fpcore::simd_reset();
        return;
    }
    Simd level;
    if (name == "scalar") {
        level = Simd::Scalar;
    } else if (name == "avx2") {
        level = Simd::Avx2;
    } else if (name == "avx512") {
        level = Simd::Avx512;
    } else {
        throw std::invalid_argument("set_simd: unknown level '" + name +
                                    "'; expected 'auto', 'scalar', 'avx2' or 'avx512'");
    }
    if (!fpcore::simd_force(level)) {
        throw std::invalid_argument(std::string("set_simd: this CPU does not support '") + name +
                                    "' (detected: " + fpcore::simd_name(fpcore::simd_detected()) + ")");
    }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "fpcore native CPU kernels (raw pointers; no libtorch)";
    fpcore::bindings::bind_stamp(m);
    fpcore::bindings::bind_pair_stats(m);
    fpcore::bindings::bind_trace(m);
    m.def("build_info", &build_info, "Compiler, OpenMP, SIMD levels and threads of this build.");
    m.def("set_simd", &set_simd, py::arg("level"), "Force 'scalar', 'avx2', 'avx512' or back to 'auto'.");
    m.def("simd_active", [] { return std::string(fpcore::simd_name(fpcore::simd_active())); });
    m.def("num_threads", &fpcore::num_threads);
    m.def("set_num_threads", [](int n) {
        if (n < 1) throw std::invalid_argument("set_num_threads: expected n >= 1, got " + std::to_string(n));
        fpcore::set_num_threads(n);
    });
}
