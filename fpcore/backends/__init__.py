"""Backends: reference (plain torch), cpu (fpcore._C), triton (CUDA; CPU only under TRITON_INTERPRET=1).

Every backend exposes the same primitive set over *contiguous* tensors already validated by
`fpcore.ops` (same element counts, supported dtypes, one device):

- ``stamp(out, base, vectors, alphas)``: out = base + sum_k alphas[k] * vectors[k] (writes out).
- ``stamp_multi(outs, bases, vectors, alphas)``: the same over many tensors; vectors[k][i].
- ``pair_stats(xs, ys) -> (dot, xx, yy, l1, l2sq, linf, n)``: over lists treated as one vector.
- ``trajectory_consecutive(ckpts) -> {norm2, dot, l1, l2sq, linf}``: ckpts[t][i].
- ``trajectory_all(ckpts) -> (dot, l2sq)``: row-major T*T lists.
- ``triple_stats(xs, ys, zs) -> (dz, dd, zz, ee, n)``: d = x - y; <d,z>, |d|^2, |z|^2, |z - y|^2.
"""
