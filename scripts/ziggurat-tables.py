#!/usr/bin/env python3
"""Writes src/collections/array/random/normal/tables.rs: the ziggurat of the standard
normal density f(x) = exp(-x^2/2) in 2048 layers of equal area (Marsaglia and Tsang 2000),
computed with mpmath at 50 digits. Each width is rounded to a multiple of 2^-49, so that
`X[i] + 8` is a double (the AVX-512 path keeps `(X[i] + 8) / 8`, whose exponent is the same
for every layer, and puts a threshold in the exponent's bits); the heights are the density
at the widths before rounding, so the layers' areas stay equal (within 1e-12, as rounding
the heights allows; a corner lies off the curve by less than 2^-50 in x).

    python3 scripts/ziggurat-tables.py > src/collections/array/random/normal/tables.rs

Needs mpmath (Debian: python3-mpmath).
"""
from mpmath import erfc, exp, findroot, log, mp, mpf, pi, sqrt

mp.dps = 50
N = 2048


def f(x):
    return exp(-x * x / 2)


def layers(r):
    """The layer area v and widths X[0..] from the base width r; the last entry says how
    far the top layer misses f(0) = 1 (positive: r is too small)."""
    v = r * f(r) + sqrt(pi / 2) * erfc(r / sqrt(2))
    x = [v / f(r), r]
    for i in range(1, N - 1):
        y = f(x[i]) + v / x[i]
        if y >= 1:
            return v, x, y - 1
        x.append(sqrt(-2 * log(y)))
    return v, x, f(x[N - 1]) + v / x[N - 1] - 1


lo, hi = mpf(3), mpf(5)
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
X = [float(t + 8) - 8.0 for t in x]
assert all(8.0 <= t + 8.0 < 16.0 and (t + 8.0) - 8.0 == t for t in X)
F = [float(f(t)) for t in x]
F[0] = 0.0
R = [float(mpf(X[i + 1]) / mpf(X[i])) for i in range(N)]
accept = sum(mpf(X[i + 1]) / mpf(X[i]) for i in range(N)) / N
area = max(abs(mpf(X[i]) * (mpf(F[i + 1]) - mpf(F[i])) - v) / v for i in range(1, N))


def bounds(i):
    """How far the curve strays from the wedge's diagonal in layer i >= 1, in the units of
    the wedge test: a point `u` of the wedge (`R[i] <= u < 1`) is `s = (1 - u) / (1 - R[i])`
    of the way in from the layer's outer corner, its height `h` of the way up the layer;
    the curve is at `h = s + c(s)`. Returns (min c, max c), with 0 (the corners)."""
    w, r, lo_f, hi_f = mpf(X[i]), mpf(R[i]), mpf(F[i]), mpf(F[i + 1])
    def c(t):
        return (f(w * (1 - t * (1 - r))) - lo_f) / (hi_f - lo_f) - t
    # c'(s) = 0 where x exp(-x²/2) = (F[i+1] - F[i]) / (X[i] (1 - R[i])); x exp(-x²/2)
    # rises up to x = 1 and falls after it, so each side has at most one such x.
    k = (hi_f - lo_f) / (w * (1 - r))
    g = lambda x: x * exp(-x * x / 2) - k
    ends = [w * r, w]
    found = [mpf(0)]
    for a, b in [(ends[0], min(ends[1], mpf(1))), (max(ends[0], mpf(1)), ends[1])]:
        if a < b and g(a) * g(b) < 0:
            x = findroot(g, (a, b), solver="anderson")
            found.append(c((1 - x / w) / (1 - r)))
    return min(found), max(found)


# The wedge test's margins: far beyond the rounding of `s` and `h` (about 1e-15).
MARGIN = mpf(10) ** -9
LO = [0.0]
HI = [0.0]
for i in range(1, N):
    lo, hi = bounds(i)
    LO.append(float(lo - MARGIN))
    HI.append(float(hi + MARGIN))
band = sum(HI[i] - LO[i] for i in range(1, N)) / (N - 1)
worst = max(range(1, N), key=lambda i: abs(mpf(X[i]) * (mpf(F[i + 1]) - mpf(F[i])) - v))
assert area < mpf(10) ** -12, (area, worst, X[worst], F[worst], F[worst + 1])
LO_DOC = """The wedge test's lower bounds (`LO[0]`, unused, is 0): in layer `i >= 1`, a point `s` of the
way in from the outer corner (`s = (1 - u) / (1 - R[i])`) at height `h` (of the layer's)
is under the curve when `h - s < LO[i]`."""
HI_DOC = f"""The wedge test's upper bounds: the point is above the curve when `h - s >= HI[i]`. Between
the two bounds ({float(band) * 100:.2f} % of a wedge's points, on average over the layers)
the exact test decides."""


def table(name, values, doc):
    lines = [f"/// {line}" for line in doc.split("\n")] + ["#[rustfmt::skip]", f"pub(super) static {name}: [f64; {len(values)}] = ["]
    for k in range(0, len(values), 4):
        lines.append("    " + " ".join(repr(t) + "," for t in values[k:k + 4]))
    lines.append("];")
    return "\n".join(lines)


print(f"""//! The ziggurat of the standard normal density `f(x) = exp(-x²/2)`: {N} layers of equal
//! area, written by `scripts/ziggurat-tables.py` (mpmath, 50 digits; each width rounded to a
//! multiple of 2^-49, each height the density at the width before rounding, so the areas are
//! equal within {float(area):.0e}).
//! {float(accept) * 100:.2f} % of points fall where the first test settles them.

/// Layers.
pub(super) const LAYERS: usize = {N};

/// `r`, where the tail starts: the width of layer 1.
pub(super) const TAIL_START: f64 = {X[1]!r};

/// The area of each layer (`r f(r)` plus the tail's area; `X[i] (F[i+1] - F[i])` for
/// `i >= 1`).
#[cfg(test)]
pub(super) const AREA: f64 = {float(v)!r};

{table("X", X, "Layer widths: `X[0]` is the base layer's area over `f(r)`, `X[1] = r`, `X[LAYERS] = 0`.")}

{table("F", F, "`f(X[i])` (`F[0]`, unused, is 0): layer `i >= 1` spans heights `F[i]` to `F[i+1]`.")}

{table("R", R, "`X[i+1] / X[i]`: a point `u X[i]` with `u < R[i]` is under the curve.")}

{table("LO", LO, LO_DOC)}

{table("HI", HI, HI_DOC)}""")
