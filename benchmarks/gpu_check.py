"""One-shot GPU check of the Triton backend: correctness of every op against the reference, then the numbers.

    python benchmarks/gpu_check.py [--dump DIR]   # on a CUDA machine; < 5 minutes, < 40 GB of GPU memory

Part 1 compares every triton op with fpcore.backends.reference (the spec) at sizes up to 2^26: stamp
bit for bit (NaN positions equal), reductions within fpcore.testing's tolerances. It also reads the
compiled kernels: no FMA in stamp, 16-byte vector loads, registers and spills.
Part 2 times (triton.testing.do_bench, median): the device-to-device copy roofline, stamp on 1 GiB
operands, torch baselines, a Llama-2-7B-shaped state dict through stamp_multi and torch._foreach_add_,
pair_stats; and a small sweep of block sizes and warps. A compact summary is printed last.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import fpcore  # noqa: F401
except Exception as exc:  # the ops layer or the native extension is not importable here: load the backends alone
    print(f"note: `import fpcore` failed ({type(exc).__name__}: {exc}); importing fpcore.backends alone")
    for _name in [m for m in sys.modules if m == "fpcore" or m.startswith("fpcore.")]:
        del sys.modules[_name]
    _pkg = types.ModuleType("fpcore")
    _pkg.__path__ = [str(ROOT / "fpcore")]
    sys.modules["fpcore"] = _pkg

import triton  # noqa: E402

from benchmarks._gpu_util import (  # noqa: E402
    GIB,
    LLAMA2_7B_SHAPES,
    N_1GIB_BF16,
    copy_roofline,
    gbps,
    median_ms,
    numel,
    randn,
    state_dict,
)
from fpcore.backends import reference as ref  # noqa: E402
from fpcore.backends import triton as tri  # noqa: E402
from fpcore.backends.triton import _common, pair_stats, stamp  # noqa: E402
from fpcore.testing import RTOL_POSITIVE, RTOL_SIGNED, assert_bitwise_equal  # noqa: E402

DEV = "cuda"
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHORT = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
CHECKS: list[tuple[str, bool, str]] = []
PERF: list[tuple[str, str]] = []
DUMP_DIR: Path | None = None  # --dump DIR: write the compiled kernels' PTX there


def check(name: str) -> Callable[[Callable[[], str | None]], Callable[[], None]]:
    """Run the decorated function as a named check; record pass/fail with its detail line."""

    def deco(fn: Callable[[], str | None]) -> Callable[[], None]:
        def run() -> None:
            t0 = time.perf_counter()
            try:
                detail = fn() or ""
                ok = True
            except Exception as exc:
                traceback.print_exc()
                detail, ok = f"{type(exc).__name__}: {str(exc)[:300]}", False
            torch.cuda.synchronize()
            CHECKS.append((name, ok, f"{detail} [{time.perf_counter() - t0:.1f}s]"))
            print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

        return run

    return deco


def gen(n: int, dtype: torch.dtype, seed: int, special: bool = False) -> torch.Tensor:
    """n values on the GPU: normals times 10^U(-3,3); special adds ~1% hard values and (fp32) rounding ties."""
    g = torch.Generator(device=DEV).manual_seed(seed)
    x = torch.randn(n, generator=g, device=DEV)
    x *= torch.pow(10.0, torch.empty(n, device=DEV).uniform_(-3, 3, generator=g))
    if special and n:
        fi = torch.finfo(dtype)
        hard = torch.tensor(
            [0.0, -0.0, fi.tiny / 4, -fi.tiny / 3, fi.tiny, math.inf, -math.inf, math.nan, fi.max, -fi.max],
            dtype=torch.float32,
            device=DEV,
        )
        k = max(1, n // 100)
        idx = torch.randint(0, n, (k,), generator=g, device=DEV)
        x[idx] = hard[torch.randint(0, len(hard), (k,), generator=g, device=DEV)]
    out = x.to(dtype)
    if special and n and dtype == torch.float32:
        idx = torch.randint(0, n, (max(1, n // 50),), generator=g, device=DEV)
        bits = out.view(torch.int32)
        bits[idx] = (bits[idx] & ~0xFFFF) | 0x8000
    return out


def stamp_pair(out_dt: torch.dtype, base: torch.Tensor, vectors: list[torch.Tensor], alphas: list[float]):
    out = torch.full(base.shape, 7.0, dtype=out_dt, device=DEV)
    want = torch.empty_like(out)
    tri.stamp_triton(out, base, vectors, alphas)
    ref.stamp_reference(want, base, vectors, alphas)
    return out, want


# ---- part 1: correctness ----------------------------------------------------------------------------------


@check("compiled stamp kernels: no FMA, 16-byte loads")
def check_ptx() -> str:
    n = 1 << 20
    out, base, vec = (randn(n, torch.bfloat16) for _ in range(3))
    k_single = stamp._stamp_kernel[(triton.cdiv(n, stamp.BLOCK),)](
        *(_common.kernel_view(t) for t in (out, base, vec)), *[base.view(torch.int16)] * 7,
        0.37, *[0.0] * 7, n, NVEC=1, BLOCK=stamp.BLOCK, num_warps=stamp.NUM_WARPS, enable_fp_fusion=False,
    )  # fmt: skip
    g = _common.plan([[out], [base], [vec]], stamp.MULTI_BLOCK, torch.device(DEV))[0]
    alphas = torch.tensor([0.37], device=DEV)
    k_multi = stamp._stamp_multi_kernel[(g.nchunks,)](
        g.chunks, g.addrs, alphas, OUT_T=1, BASE_T=1, VEC_T=1, NVEC=1, ALIGNED=True,
        BLOCK=stamp.MULTI_BLOCK, num_warps=stamp.MULTI_NUM_WARPS, enable_fp_fusion=False,
    )  # fmt: skip
    gp = _common.plan([[base], [vec]], pair_stats.BLOCK * pair_stats.ITERS, torch.device(DEV))[0]
    part = torch.empty((gp.nchunks, 6), device=DEV)
    k_pair = pair_stats._pair_kernel[(gp.nchunks,)](
        gp.chunks, gp.addrs, part, X_T=1, Y_T=1, ALIGNED=True,
        BLOCK=pair_stats.BLOCK, ITERS=pair_stats.ITERS, num_warps=pair_stats.NUM_WARPS,
    )  # fmt: skip
    notes, problems = [], []
    for name, k in (("single", k_single), ("multi", k_multi), ("pair", k_pair)):
        ptx = k.asm["ptx"]
        fma, ftz = ptx.count("fma.rn.f32"), ptx.count(".ftz.f32")
        v4 = ptx.count("ld.global.v4") + ptx.count("ld.global.L1::evict_last.v4") + ptx.count("ld.global.nc.v4")
        v4s = ptx.count("st.global.v4")
        notes.append(f"{name}: regs={k.n_regs} spills={k.n_spills} fma={fma} ftz={ftz} ld.v4={v4} st.v4={v4s}")
        if name != "pair" and fma:
            problems.append(f"{name} has {fma} fma")
        if v4 == 0:
            problems.append(f"{name} has no 16-byte loads")
    if DUMP_DIR is not None:
        for name, k in (("stamp", k_single), ("stamp_multi", k_multi), ("pair", k_pair)):
            (DUMP_DIR / f"{name}.ptx").write_text(k.asm["ptx"])
    if problems:
        raise AssertionError("; ".join(problems + notes))
    return "; ".join(notes)


@check("stamp: 27 dtype combos, n=2^20+3, hard values, alpha 1/-1/0.37")
def check_stamp_combos() -> str:
    n = (1 << 20) + 3
    for out_dt in DTYPES:
        for base_dt in DTYPES:
            for vec_dt in DTYPES:
                base, vec = gen(n, base_dt, 1, True), gen(n, vec_dt, 2, True)
                for alpha in (1.0, -1.0, 0.37):
                    out, want = stamp_pair(out_dt, base, [vec], [alpha])
                    assert_bitwise_equal(out, want, what=f"{SHORT[out_dt]}<-{SHORT[base_dt]}+{SHORT[vec_dt]} a={alpha}")
    return "81 cases bit-exact"


@check("stamp: sizes 0..2^26, nvec 0/1/3/8, mixed dtypes")
def check_stamp_sizes() -> str:
    cases = 0
    for n in (0, 1, 7, 4097, (1 << 24) + 1, 1 << 26):
        for nvec in (0, 1, 3, 8):
            dts = [DTYPES[(n + k) % 3] for k in range(nvec + 2)]
            base = gen(n, dts[0], n)
            vecs = [gen(n, dts[2 + k], n + 10 + k, special=k == 0) for k in range(nvec)]
            alphas = [1.0, -1.0, 0.37, -2.5, 0.37, 1.0, -1.0, 3.0][:nvec]
            out, want = stamp_pair(dts[1], base, vecs, alphas)
            assert_bitwise_equal(out, want, what=f"n={n} nvec={nvec}")
            cases += 1
    return f"{cases} cases bit-exact"


@check("stamp: rounding ties, subnormal results and operands, in place")
def check_stamp_edges() -> str:
    g = torch.Generator().manual_seed(5)
    bits = torch.randint(-(2**31), 2**31 - 1, (1 << 20,), generator=g, dtype=torch.int64).to(torch.int32)
    ties = ((bits & ~0xFFFF) | 0x8000).view(torch.float32).to(DEV)
    ties16 = ((bits & ~0x1FFF) | 0x1000).view(torch.float32).to(DEV)
    tiny = torch.tensor([1e-40, -3e-39, 2e-45, 6e-8, -3e-6, 1e-5, 6.1e-5, 0.0]).repeat(4096).to(DEV)
    for base32 in (ties, ties16, tiny):
        for out_dt in (torch.bfloat16, torch.float16, torch.float32):
            out, want = stamp_pair(out_dt, base32, [torch.zeros_like(base32)], [1.0])
            assert_bitwise_equal(out, want, what=f"ties -> {out_dt}")
    sub = torch.tensor([2.0**-130, -(2.0**-133), 2.0**-140, 1e-38]).repeat(4096).to(DEV)
    for vdt in (torch.bfloat16, torch.float32):
        out, want = stamp_pair(torch.float32, sub.to(vdt), [sub.to(vdt)], [0.5])
        assert_bitwise_equal(out, want, what=f"subnormal operands {vdt} (FTZ?)")
    n = 1 << 26
    base, vec = gen(n, torch.bfloat16, 3), gen(n, torch.float32, 4)
    want = torch.empty_like(base)
    ref.stamp_reference(want, base, [vec], [-0.37])
    tri.stamp_triton(base, base, [vec], [-0.37])
    assert_bitwise_equal(base, want, what="in place")
    return "bit-exact"


@check("stamp_multi: 24 tensors, 4 dtype signatures, unaligned views, nvec 1/2/8")
def check_stamp_multi() -> str:
    sizes = [5, 4096, 9000, 1, 0, 33, (1 << 22) + 3, 8, 100, 4097, 3, 1 << 24] * 2
    sigs = [
        (torch.bfloat16, torch.bfloat16, torch.bfloat16),
        (torch.bfloat16, torch.bfloat16, torch.float32),
        (torch.float32, torch.float16, torch.bfloat16),
        (torch.float16, torch.float32, torch.float16),
    ]
    for nvec in (1, 2, 8):
        outs, bases, vecs = [], [], [[] for _ in range(nvec)]
        for i, n in enumerate(sizes):
            o, b, v = sigs[i % 4]
            off = 1 if i >= 12 else 0  # the second dozen sits one element into its storage: not 16-byte aligned
            outs.append(torch.full((n + off,), 7.0, dtype=o, device=DEV)[off:])
            bases.append(gen(n + off, b, i, True)[off:])
            for k in range(nvec):
                vecs[k].append(gen(n, v if k % 2 == 0 else torch.float32, 100 * k + i))
        wants = [torch.empty_like(o) for o in outs]
        alphas = [0.37, -1.0, 1.0, 2.5, -0.37, 1.0, 0.5, -2.0][:nvec]
        tri.stamp_multi_triton(outs, bases, vecs, alphas)
        ref.stamp_multi_reference(wants, bases, vecs, alphas)
        for i, (o, w) in enumerate(zip(outs, wants, strict=True)):
            assert_bitwise_equal(o, w, what=f"nvec={nvec} tensor {i}")
    ngroups = len(_common.plan([outs, bases, *vecs], stamp.MULTI_BLOCK, torch.device(DEV)))
    return f"bit-exact; {ngroups} launches for 24 tensors (4 signatures x aligned/unaligned)"


def _cond(xs, ys) -> float:
    return sum(
        float(torch.dot(x.double().abs().reshape(-1), y.double().abs().reshape(-1)))
        for x, y in zip(xs, ys, strict=True)
    )


def _pos_ok(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=RTOL_POSITIVE["triton"] + 1e-12, abs_tol=1e-300)


def _relerr(got: float, want: float) -> float:
    return abs(got - want) / abs(want) if want else abs(got)


@check("pair_stats: sizes to 2^26, 9 dtype pairs, lists, NaN, determinism")
def check_pair_stats() -> str:
    worst = 0.0
    cases = 0
    for n in (1, 4097, (1 << 20) + 3, 1 << 26):
        pairs = [(a, b) for a in DTYPES for b in DTYPES] if n <= (1 << 20) + 3 else [(d, d) for d in DTYPES]
        for xdt, ydt in pairs:
            xs, ys = [gen(n, xdt, n)], [gen(n, ydt, n + 1)]
            got, want = tri.pair_stats_triton(xs, ys), ref.pair_stats_reference(xs, ys)
            assert got[6] == want[6] and got[5] == want[5], (got, want)
            assert abs(got[0] - want[0]) <= (RTOL_SIGNED["triton"] + 1e-12) * _cond(xs, ys), (got, want)
            for i in (1, 2, 3, 4):
                assert _pos_ok(got[i], want[i]), (i, got, want)
                worst = max(worst, _relerr(got[i], want[i]))
            cases += 1
    xs = [gen(n, DTYPES[i % 3], i) for i, n in enumerate([0, 5, 4096, 4097, 1 << 22, 3])]
    ys = [gen(x.numel(), DTYPES[(i + 1) % 3], 50 + i) for i, x in enumerate(xs)]
    got, want = tri.pair_stats_triton(xs, ys), ref.pair_stats_reference(xs, ys)
    assert got[5] == want[5] and all(_pos_ok(got[i], want[i]) for i in (1, 2, 3, 4)), (got, want)
    assert tri.pair_stats_triton(xs, ys) == got, "not deterministic"
    x = gen(1 << 20, torch.float32, 9)
    y = gen(1 << 20, torch.bfloat16, 10)
    for where in (0, 4095, 70000):
        xn = x.clone()
        xn[where] = math.nan
        got = tri.pair_stats_triton([xn], [y])
        assert math.isnan(got[5]) and math.isnan(got[4]), got
    return f"{cases + 1} cases in tolerance; worst relative error of the positive sums {worst:.1e}"


@check("trajectory_consecutive / trajectory_all / triple_stats")
def check_trajectories() -> str:
    sizes = [(1 << 24) + 3, 5, 4096]
    ckpts = [[gen(n, DTYPES[(t + i) % 3], 10 * t + i) for i, n in enumerate(sizes)] for t in range(4)]
    got = tri.trajectory_consecutive_triton(ckpts)
    want = ref.trajectory_consecutive_reference(ckpts)
    for key in ("norm2", "l1", "l2sq"):
        assert all(_pos_ok(g, w) for g, w in zip(got[key], want[key], strict=True)), (key, got[key], want[key])
    assert got["linf"] == want["linf"]
    for t in range(3):
        assert abs(got["dot"][t] - want["dot"][t]) <= 1e-5 * _cond(ckpts[t], ckpts[t + 1])
    dot, l2 = tri.trajectory_all_triton(ckpts)
    wdot, wl2 = ref.trajectory_all_reference(ckpts)
    T = len(ckpts)
    for i in range(T):
        for j in range(T):
            k = i * T + j
            assert dot[k] == dot[j * T + i] and l2[k] == l2[j * T + i]
            assert abs(dot[k] - wdot[k]) <= 1e-5 * _cond(ckpts[i], ckpts[j])
            assert _pos_ok(l2[k], wl2[k]) if i != j else l2[k] == 0.0
    n = 1 << 26
    xs, ys, zs = [gen(n, torch.bfloat16, 1)], [gen(n, torch.float32, 2)], [gen(n, torch.float16, 3)]
    dz, dd, zz, ee, m = tri.triple_stats_triton(xs, ys, zs)
    w = ref.triple_stats_reference(xs, ys, zs)
    assert m == w[4] and _pos_ok(dd, w[1]) and _pos_ok(zz, w[2]) and _pos_ok(ee, w[3]), ((dz, dd, zz, ee), w)
    d = [xs[0].float() - ys[0].float()]
    assert abs(dz - w[0]) <= 1e-5 * _cond(d, zs), (dz, w[0])
    return "in tolerance"


# ---- part 2: numbers ----------------------------------------------------------------------------------------


def perf(name: str, value: str) -> None:
    PERF.append((name, value))
    print(f"  {name:<52} {value}", flush=True)


def _rate(name: str, nbytes: int, ms: float, copy_gbps: float) -> None:
    rate = gbps(nbytes, ms)
    perf(name, f"{ms:8.3f} ms {rate:6.0f} GB/s  ratio to copy {rate / copy_gbps:.3f}")


def _bench_1gib_bf16_tau(base: torch.Tensor, out: torch.Tensor, copy_gbps: float) -> None:
    n = base.numel()
    tau = randn(n, torch.bfloat16, scale=1e-3)
    _rate(
        "stamp bf16+bf16->bf16, 1 GiB operands",
        6 * n,
        median_ms(lambda: tri.stamp_triton(out, base, [tau], [0.37])),
        copy_gbps,
    )
    _rate("torch a.add_(b) bf16, 1 GiB operands", 6 * n, median_ms(lambda: out.add_(tau)), copy_gbps)
    _rate(
        "pair_stats bf16 x bf16, 1 GiB each (read)",
        4 * n,
        median_ms(lambda: tri.pair_stats_triton([base], [tau])),
        copy_gbps,
    )
    _rate(
        "triple_stats bf16 x 3 (y is z), 1 GiB each",
        4 * n,
        median_ms(lambda: tri.triple_stats_triton([base], [tau], [tau])),
        copy_gbps,
    )


def _bench_1gib_f32_tau(base: torch.Tensor, out: torch.Tensor, copy_gbps: float) -> None:
    n = base.numel()
    tau = randn(n, torch.float32, scale=1e-3)
    _rate(
        "stamp bf16+f32->bf16, 1 GiB bf16 operands",
        8 * n,
        median_ms(lambda: tri.stamp_triton(out, base, [tau], [0.37])),
        copy_gbps,
    )


def bench_1gib(copy_gbps: float) -> None:
    base = randn(N_1GIB_BF16, torch.bfloat16)
    out = torch.empty_like(base)
    _bench_1gib_bf16_tau(base, out, copy_gbps)
    _bench_1gib_f32_tau(base, out, copy_gbps)


def sweep(copy_gbps: float) -> None:
    """Tile shapes of stamp_multi (one tensor) and pair_stats, bf16, 512 MiB operands: ratio to copy."""
    n = N_1GIB_BF16 // 2
    base, tau, out = (
        randn(n, torch.bfloat16),
        randn(n, torch.bfloat16),
        torch.empty(n, dtype=torch.bfloat16, device=DEV),
    )
    saved = (stamp.MULTI_BLOCK, stamp.MULTI_NUM_WARPS, pair_stats.BLOCK, pair_stats.ITERS, pair_stats.NUM_WARPS)
    rows = []
    try:
        for block in (4096, 8192, 16384):
            for warps in (4, 8, 16):
                stamp.MULTI_BLOCK, stamp.MULTI_NUM_WARPS = block, warps
                ms = median_ms(lambda: tri.stamp_multi_triton([out], [base], [[tau]], [0.37]), rep=40)
                rows.append(f"stamp_multi B={block:<5} w={warps:<2} {gbps(6 * n, ms) / copy_gbps:.3f}")
        for block, iters, warps in ((512, 32, 4), (1024, 8, 4), (1024, 16, 4), (1024, 32, 4), (2048, 8, 4),
                                    (2048, 16, 8), (4096, 4, 8)):  # fmt: skip
            pair_stats.BLOCK, pair_stats.ITERS, pair_stats.NUM_WARPS = block, iters, warps
            ms = median_ms(lambda: tri.pair_stats_triton([base], [tau]), rep=40)
            rows.append(f"pair_stats B={block:<5} it={iters:<2} w={warps:<2} {gbps(4 * n, ms) / copy_gbps:.3f}")
    finally:
        stamp.MULTI_BLOCK, stamp.MULTI_NUM_WARPS, pair_stats.BLOCK, pair_stats.ITERS, pair_stats.NUM_WARPS = saved
    perf("sweep (ratio to copy), 512 MiB bf16 operands", "\n    " + "\n    ".join(rows))


def _bench_7b_bf16_tau(base: list[torch.Tensor], copy_gbps: float) -> None:
    n = numel(LLAMA2_7B_SHAPES)
    tau = state_dict(LLAMA2_7B_SHAPES, torch.bfloat16, scale=1e-3)
    ms = median_ms(lambda: torch._foreach_add_(base, tau, alpha=0.37))
    _rate("7B torch._foreach_add_ bf16 (in place)", 6 * n, ms, copy_gbps)
    ms = median_ms(lambda: tri.stamp_multi_triton(base, base, [tau], [0.37]))
    _rate("7B stamp_multi bf16 tau (in place)", 6 * n, ms, copy_gbps)
    ms = median_ms(lambda: tri.pair_stats_triton(base, tau))
    _rate("7B pair_stats bf16 x bf16", 4 * n, ms, copy_gbps)


def _bench_7b_f32_tau(base: list[torch.Tensor], copy_gbps: float) -> None:
    n = numel(LLAMA2_7B_SHAPES)
    tau = state_dict(LLAMA2_7B_SHAPES, torch.float32, scale=1e-3)  # 27 GB: with the base, the peak (40.4e9 B)
    ms = median_ms(lambda: tri.stamp_multi_triton(base, base, [tau], [0.37]))
    _rate("7B stamp_multi f32 tau -> bf16 (in place)", 8 * n, ms, copy_gbps)


def bench_7b(copy_gbps: float) -> None:
    perf("7B state dict", f"{len(LLAMA2_7B_SHAPES)} tensors, {numel(LLAMA2_7B_SHAPES) / 1e9:.3f}e9 params")
    base = state_dict(LLAMA2_7B_SHAPES, torch.bfloat16)
    _bench_7b_bf16_tau(base, copy_gbps)
    torch.cuda.empty_cache()
    _bench_7b_f32_tau(base, copy_gbps)


def main() -> int:
    t0 = time.perf_counter()
    props = torch.cuda.get_device_properties(0)
    print(f"{props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, triton {triton.__version__}")
    for fn in (check_ptx, check_stamp_combos, check_stamp_sizes, check_stamp_edges, check_stamp_multi,
               check_pair_stats, check_trajectories):  # fmt: skip
        fn()
    torch.cuda.empty_cache()
    print("numbers (do_bench median):", flush=True)
    copy_ms, copy_gbps = copy_roofline(GIB)
    perf("copy roofline dst.copy_(src), 1 GiB (read+write)", f"{copy_ms:.3f} ms {copy_gbps:.0f} GB/s")
    for part in (bench_1gib, bench_7b, sweep):
        try:
            part(copy_gbps)
        except Exception as exc:
            traceback.print_exc()
            perf(part.__name__, f"FAILED {type(exc).__name__}: {str(exc)[:200]}")
        torch.cuda.empty_cache()
    peak = torch.cuda.max_memory_allocated() / GIB
    print("\n==== summary ====")
    for name, ok, detail in CHECKS:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    for name, value in PERF:
        print(f"{name:<52} {value}")
    print(f"peak GPU memory {peak:.1f} GiB, wall {time.perf_counter() - t0:.0f} s")
    failed = sum(not ok for _, ok, _ in CHECKS)
    print(f"{len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    if len(sys.argv) == 3 and sys.argv[1] == "--dump":
        DUMP_DIR = Path(sys.argv[2])
    sys.exit(main())
