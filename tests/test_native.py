"""The native extension: loaded where CI expects it, honest build info, raw-binding checks."""

import json
import os
import subprocess
import sys

import pytest
import torch

import fpcore
from fpcore import _native

needs_native = pytest.mark.skipif(not _native.HAS_NATIVE, reason="fpcore._C not loaded")


def test_native_loaded_when_expected():
    if os.environ.get("FPCORE_EXPECT_NATIVE") == "1":
        assert _native.HAS_NATIVE, f"FPCORE_EXPECT_NATIVE=1 but fpcore._C did not load: {_native.NATIVE_LOAD_ERROR}"
    else:
        assert _native.HAS_NATIVE or _native.NATIVE_LOAD_ERROR


@needs_native
def test_build_info_and_simd_control():
    info = _native._C.build_info()
    assert info["simd_detected"] in ("scalar", "avx2", "avx512")
    assert info["threads"] >= 1 and info["block"] == 4096 and info["max_vectors"] == 8
    _native._C.set_simd("scalar")
    assert _native._C.simd_active() == "scalar"
    _native._C.set_simd("auto")
    assert _native._C.simd_active() == info["simd_detected"]
    with pytest.raises(ValueError, match=r"set_simd: unknown level 'sse9'"):
        _native._C.set_simd("sse9")


@needs_native
def test_binding_checks_name_the_op():
    C = _native._C
    x = torch.zeros(4)
    p = x.data_ptr()
    with pytest.raises(ValueError, match=r"stamp: takes 1 to 8 vectors, got 9"):
        C.stamp_many([p], [0], [p], [0], [[p]] * 9, [[0]] * 9, [1.0] * 9, [4])
    with pytest.raises(TypeError, match=r"stamp: out\[0\] has dtype code 7"):
        C.stamp_many([p], [7], [p], [0], [[p]], [[0]], [1.0], [4])
    with pytest.raises(ValueError, match=r"stamp: base\[0\] is a null pointer with 4 elements"):
        C.stamp_many([p], [0], [0], [0], [[p]], [[0]], [1.0], [4])
    with pytest.raises(ValueError, match=r"pair_stats: b dtypes has 2 entries, expected 1"):
        C.pair_stats([p], [0], [p], [0, 0], [4])
    with pytest.raises(ValueError, match=r"trajectory_stats: mode 'consecutive' needs at least 2 checkpoints"):
        C.trajectory_consecutive([[p]], [[0]], [4])


def test_package_imports_without_native():
    """A package whose native build failed still imports; ops that need _C say why."""
    code = (
        "import sys; sys.modules['fpcore._C'] = None\n"
        "import torch, fpcore\n"
        "from fpcore import _native\n"
        "assert not fpcore.HAS_NATIVE\n"
        "print(fpcore.stamp(torch.ones(3), torch.ones(3)).tolist())\n"
        "try:\n    _native.require_native('stamp')\nexcept RuntimeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "[2.0, 2.0, 2.0]" in out
    assert "stamp: the native extension fpcore._C is not available" in out and "make native" in out


def test_info_json_and_text():
    out = subprocess.run([sys.executable, "-m", "fpcore.info", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["torch"] == torch.__version__
    assert set(info["backends"]) == {"triton", "cpu", "reference"}
    assert info["backends"]["reference"]["available"] is True
    assert info["native"]["loaded"] == _native.HAS_NATIVE
    if not info["backends"]["cpu"]["available"]:
        assert info["backends"]["cpu"]["reason"]
    text = subprocess.run([sys.executable, "-m", "fpcore.info"], capture_output=True, text=True, check=True).stdout
    assert "backends (priority order)" in text


def test_auto_dispatch_prefers_native_on_cpu():
    from fpcore._dispatch import select

    name, _ = select("stamp", "stamp", [torch.zeros(2)])
    assert name == ("cpu" if fpcore.HAS_NATIVE else "reference")


@needs_native
def test_thread_count_survives_torch_ops():
    """fpcore keeps its own thread count: torch resetting OpenMP's must not undo it."""
    try:
        fpcore.set_num_threads(1)
        torch.randn(100_000).sum()
        torch.set_num_threads(torch.get_num_threads())
        assert _native._C.num_threads() == 1
    finally:
        fpcore.set_num_threads(os.cpu_count() or 1)
    with pytest.raises(ValueError, match=r"set_num_threads: expected an int >= 1, got 0"):
        fpcore.set_num_threads(0)
