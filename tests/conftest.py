"""Shared fixtures: the backends to test, and the Triton interpreter on machines without CUDA."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before triton is first imported: Triton kernels then run on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fpcore import _dispatch, _native  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRETED = DEVICE == "cpu"


def _backend_params() -> list:
    params = [pytest.param(("reference", None), id="reference")]
    if _native.HAS_NATIVE:
        detected = _native._C.build_info()["simd_detected"]
        order = ["scalar", "avx2", "avx512"]
        for level in order[: order.index(detected) + 1]:
            params.append(pytest.param(("cpu", level), id=f"cpu-{level}"))
    else:
        params.append(pytest.param(("cpu", None), id="cpu", marks=pytest.mark.skip(reason="fpcore._C not loaded")))
    why = _dispatch.refusal("triton", [torch.empty(0, device=DEVICE)])
    marks = [pytest.mark.skip(reason=f"triton: {why}")] if why else []
    params.append(pytest.param(("triton", None), id="triton", marks=marks))
    return params


BACKEND_PARAMS = _backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """(name, device) with that backend forced for the test; cpu runs once per SIMD level."""
    name, level = request.param
    device = DEVICE if name == "triton" else "cpu"
    if name == "cpu":
        _native._C.set_simd(level)
    try:
        with _dispatch.use_backend(name):
            yield name, device
    finally:
        if name == "cpu":
            _native._C.set_simd("auto")


def size_ok(backend_name: str, n: int) -> bool:
    """The Triton interpreter is slow: keep its sizes small on machines without CUDA."""
    return not (backend_name == "triton" and INTERPRETED and n > 70_000)


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(n)``: every file fpcore.io.writer opens for writing accepts n write calls, then
    fails with ENOSPC (a disk that fills up in the middle of an output)."""
    import errno

    import fpcore.io.writer as wmod

    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f, self.writes, self.left = f, 0, None

        def write(self, b):
            self.writes += 1
            if self.writes > self.left:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, k):
            return getattr(self.f, k)

    def install(writes_before_full: int) -> None:
        def fake_open(path, mode="r", *a, **k):
            f = real_open(path, mode, *a, **k)
            if "w" not in mode:
                return f
            d = FullDisk(f)
            d.left = writes_before_full
            return d

        monkeypatch.setattr(wmod, "open", fake_open, raising=False)

    return install


def sigkill_when_ready(args: list[str], cwd: object) -> None:
    """Run `args`, wait for it to print "writing", SIGKILL it, and check that the kill is what ended it."""
    import signal
    import subprocess

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=cwd)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
