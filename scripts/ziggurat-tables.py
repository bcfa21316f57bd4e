#!/usr/bin/env python3
"""Writes src/collections/array/random/normal/tables.rs: the ziggurat of the standard
normal density f(x) = exp(-x^2/2) in 256 layers of equal area (Marsaglia and Tsang 2000),
computed with mpmath at 50 digits and rounded to doubles.

    python3 scripts/ziggurat-tables.py > src/collections/array/random/normal/tables.rs

Needs mpmath (Debian: python3-mpmath).
"""
from mpmath import erfc, exp, log, mp, mpf, pi, sqrt

mp.dps = 50
N = 256


def f(x):
    return exp(-x * x / 2)


def layers(r):
    """The layer area v and widths X[0..] from the base width r; the last entry says how
    far the top layer misses f(0) = 1 (positive: r is too small)."""
    v = r * f(r) + sqrt(pi / 2) * erfc(r / sqrt(2))
    x = [v / f(r), r]
    for i in range(1, N):
        y = f(x[i]) + v / x[i]
        if y >= 1:
            return v, x, y - 1
        x.append(sqrt(-2 * log(y)))
    return v, x, f(x[N - 1]) + v / x[N - 1] - 1


lo, hi = mpf(3), mpf(4)
for _ in range(200):
    mid = (lo + hi) / 2
    v, x, miss = layers(mid)
    if len(x) < N or miss > 0:
        lo = mid
    else:
        hi = mid
r = (lo + hi) / 2
v, x, miss = layers(r)
assert len(x) == N and abs(miss) < mpf(10) ** -40, (len(x), miss)
x.append(mpf(0))
X = [float(t) for t in x]
F = [float(f(t)) for t in x]
F[0] = 0.0
R = [float(x[i + 1] / x[i]) for i in range(N)]
accept = sum(x[i + 1] / x[i] for i in range(N)) / N


def table(name, values, doc):
    lines = [f"/// {doc}", "#[rustfmt::skip]", f"pub(super) const {name}: [f64; {len(values)}] = ["]
    for k in range(0, len(values), 4):
        lines.append("    " + " ".join(repr(t) + "," for t in values[k:k + 4]))
    lines.append("];")
    return "\n".join(lines)


print(f"""//! The ziggurat of the standard normal density `f(x) = exp(-x²/2)`: 256 layers of equal
//! area, written by `scripts/ziggurat-tables.py` (mpmath, 50 digits, rounded to doubles).
//! {float(accept) * 100:.2f} % of points fall where the first test settles them.

/// `r`, where the tail starts: the width of layer 1.
pub(super) const TAIL_START: f64 = {float(r)!r};

/// The area of each layer (`r f(r)` plus the tail's area; `X[i] (F[i+1] - F[i])` for
/// `i >= 1`).
#[cfg(test)]
pub(super) const AREA: f64 = {float(v)!r};

{table("X", X, "Layer widths: `X[0]` is the base layer's area over `f(r)`, `X[1] = r`, `X[256] = 0`.")}

{table("F", F, "`f(X[i])` (`F[0]`, unused, is 0): layer `i >= 1` spans heights `F[i]` to `F[i+1]`.")}

{table("R", R, "`X[i+1] / X[i]`: a point `u X[i]` with `|u| < R[i]` is under the curve.")}""")
