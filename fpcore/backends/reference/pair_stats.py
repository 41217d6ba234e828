"""The reduction family's spec, in float64 throughout (the oracle the fast backends are held to).

The fast backends accumulate in fp32 over fixed blocks and sum the block partials in fp64 (see
csrc/include/fpcore/kernels.h); fpcore.testing holds the tolerances between the two.
"""

from collections.abc import Sequence

import torch

Vector = Sequence[torch.Tensor]


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).to(torch.float64)


def pair_stats_reference(xs: Vector, ys: Vector) -> tuple[float, float, float, float, float, float, int]:
    """(<x,y>, |x|^2, |y|^2, sum|x-y|, sum (x-y)^2, max|x-y|, n) over the flattened lists."""
    dot = xx = yy = l1 = l2sq = 0.0
    linf = 0.0
    n = 0
    for x, y in zip(xs, ys, strict=True):
        a, b = _f64(x), _f64(y)
        # differences as the fast kernels form them: in fp32, then widened
        d = (x.reshape(-1).to(torch.float32) - y.reshape(-1).to(torch.float32)).to(torch.float64)
        dot += float(torch.dot(a, b))
        xx += float(torch.dot(a, a))
        yy += float(torch.dot(b, b))
        l1 += float(d.abs().sum())
        l2sq += float(torch.dot(d, d))
        if d.numel():
            m = float(d.abs().max())  # NaN if any difference is NaN
            linf = m if (m != m or m > linf) else linf
        n += a.numel()
    return dot, xx, yy, l1, l2sq, linf, n


def trajectory_consecutive_reference(ckpts: Sequence[Vector]) -> dict[str, list[float]]:
    """norm2[t] = |theta_t|^2 for every t; dot, l1, l2sq, linf for each pair (theta_t, theta_t+1)."""
    res: dict[str, list[float]] = {"norm2": [], "dot": [], "l1": [], "l2sq": [], "linf": []}
    for t, ck in enumerate(ckpts):
        res["norm2"].append(pair_stats_reference(ck, ck)[1])
        if t + 1 < len(ckpts):
            dot, _, _, l1, l2sq, linf, _ = pair_stats_reference(ck, ckpts[t + 1])
            res["dot"].append(dot)
            res["l1"].append(l1)
            res["l2sq"].append(l2sq)
            res["linf"].append(linf)
    return res


def trajectory_all_reference(ckpts: Sequence[Vector]) -> tuple[list[float], list[float]]:
    """Row-major T*T <theta_i, theta_j> and |theta_i - theta_j|^2 (from the differences)."""
    T = len(ckpts)
    dot = [0.0] * (T * T)
    l2sq = [0.0] * (T * T)
    for i in range(T):
        for j in range(i, T):
            s = pair_stats_reference(ckpts[i], ckpts[j])
            dot[i * T + j] = dot[j * T + i] = s[0]
            l2sq[i * T + j] = l2sq[j * T + i] = s[4] if i != j else 0.0
    return dot, l2sq


def triple_stats_reference(xs: Vector, ys: Vector, zs: Vector) -> tuple[float, float, float, float, int]:
    """d = x - y: (<d,z>, |d|^2, |z|^2, |z-y|^2, n)."""
    dz = dd = zz = ee = 0.0
    n = 0
    for x, y, z in zip(xs, ys, zs, strict=True):
        x32, y32, z32 = (t.reshape(-1).to(torch.float32) for t in (x, y, z))
        d = (x32 - y32).to(torch.float64)
        e = (z32 - y32).to(torch.float64)
        c = z32.to(torch.float64)
        dz += float(torch.dot(d, c))
        dd += float(torch.dot(d, d))
        zz += float(torch.dot(c, c))
        ee += float(torch.dot(e, e))
        n += d.numel()
    return dz, dd, zz, ee, n
