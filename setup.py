"""Builds fpcore and its optional native extension fpcore._C by driving CMakeLists.txt.

If the native build fails (no compiler, no CMake), the package still installs and imports: the
reference backend serves, and `python -m fpcore.info` says why `_C` is missing.
"""

import os
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # the extension is optional
            if os.environ.get("FPCORE_REQUIRE_NATIVE_BUILD") == "1":
                raise
            print(f"fpcore: native extension not built ({exc}); the reference backend will serve.", file=sys.stderr)

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get("FPCORE_SKIP_NATIVE_BUILD") == "1":  # the Makefile builds it in place itself
            print("fpcore: FPCORE_SKIP_NATIVE_BUILD=1, native extension not built here", file=sys.stderr)
            return
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        build_temp = Path(self.build_temp).resolve() / "cmake"
        build_temp.mkdir(parents=True, exist_ok=True)
        build_type = os.environ.get("FPCORE_BUILD_TYPE", "Release")
        cfg = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
        ]
        try:
            import pybind11

            cfg.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_temp), *cfg], check=True)
        jobs = str(os.cpu_count() or 2)
        subprocess.run(["cmake", "--build", str(build_temp), "--config", build_type, "-j", jobs], check=True)


setup(ext_modules=[CMakeExtension("fpcore._C")], cmdclass={"build_ext": CMakeBuild})
