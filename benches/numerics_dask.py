"""The `numerics` bench's peers: dask.array on a dask-mpi cluster, and NumPy alone on one
chunk (`benches/numerics.rs` launches them, the same shapes, chunks and steps as mpidask).

    mpirun -np N python numerics_dask.py stencil N CHUNK STEPS LIMIT DIR
    mpirun -np N python numerics_dask.py tsqr ROWS COLS CHUNK_ROWS LIMIT DIR
    mpirun -np N python numerics_dask.py svd ROWS COLS CHUNK_ROWS K N_POWER_ITER LIMIT DIR
    python numerics_dask.py numpy_qr ROWS COLS

Under mpirun, rank 0 is dask-mpi's scheduler, rank 1 runs the workload, ranks 2.. are
workers of one thread with `memory_limit=LIMIT` (bytes), spilling into `DIR`. Rank 1
builds and persists the input (untimed), times the workload from the call to the result,
checks its own answer (exit 1 otherwise) and prints one line:

* `stencil`: the grid `u0[i, j] = ((7 i + 13 j) % 101) / 100` (N x N, CHUNK x CHUNK
  chunks), then STEPS times `u = u.map_overlap(step, depth=1,
  boundary="periodic").persist(); wait(u)` (the 5-point heat stencil, NumPy on the padded
  block). `RESULT name=stencil seconds=<s> sum0=<initial sum> sum=<sum> sumsq=<sum of
  squares>`; the sum must be conserved (1e-9 relative).
* `tsqr`: `da.random.normal` (ROWS x COLS, CHUNK_ROWS rows a chunk) persisted, then
  `q, r = da.linalg.tsqr(x); dask.compute(r, (q ** 2).sum(axis=0))`. `RESULT name=tsqr
  seconds=<s> qsq=<sum of squares of Q> r00=<R[0, 0]>`; `qsq` must be COLS (1e-8
  relative), R upper triangular, |R[0, 0]| within 5 % of sqrt(ROWS).
* `svd`: `x = a @ b + 0.01 * noise` (a: ROWS x K, b: K x COLS, noise ROWS x COLS, all
  normal; rank K plus noise) persisted, then `u, s, v = da.linalg.svd_compressed(x, k=K,
  n_power_iter=N_POWER_ITER, seed=...)` persisted together. `RESULT name=svd seconds=<s>
  error=<|x - u s v| / |x|>` (Frobenius norms, computed after the timing): K singular
  values, decreasing, and an error below 0.01.
* `numpy_qr` (no MPI, one process): `np.linalg.qr` of one ROWS x COLS normal matrix.
  `RESULT name=numpy_qr seconds=<s> qsq=<...> r00=<...>`, checked as `tsqr`. The bench
  sets `OPENBLAS_NUM_THREADS=1` (one core, as one worker of one thread).
"""

import sys
import time

ALPHA = 0.2
SEED = 7


def fail(message):
    print(f"CHECK FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def step(b):
    """One step of the inner cells of a padded block (the halo ring is cut off after)."""
    out = b.copy()
    c = b[1:-1, 1:-1]
    out[1:-1, 1:-1] = c + ALPHA * (b[:-2, 1:-1] + b[2:, 1:-1] + b[1:-1, :-2] + b[1:-1, 2:] - 4.0 * c)
    return out


def check_qr(qsq, r, rows, cols):
    import numpy as np

    if abs(qsq - cols) > 1e-8 * cols:
        fail(f"the sum of squares of Q is {qsq!r}, not {cols}")
    below = np.tril(r, -1)
    if np.abs(below).max(initial=0.0) > 1e-12 * abs(r[0, 0]):
        fail("R is not upper triangular")
    if abs(abs(r[0, 0]) - rows**0.5) > 0.05 * rows**0.5:
        fail(f"|R[0, 0]| = {abs(r[0, 0])!r} is not near sqrt({rows})")


def numpy_qr(rows, cols):
    import numpy as np

    a = np.random.default_rng(SEED).standard_normal((rows, cols))
    started = time.perf_counter()
    q, r = np.linalg.qr(a)
    seconds = time.perf_counter() - started
    qsq = float((q * q).sum())
    check_qr(qsq, r, rows, cols)
    print(f"RESULT name=numpy_qr seconds={seconds:.6f} qsq={qsq!r} r00={float(r[0, 0])!r}", flush=True)


def stencil(client, n, chunk, steps):
    import dask
    import dask.array as da
    import numpy as np
    from dask.distributed import wait

    i = da.arange(n, chunks=chunk, dtype=np.float64)[:, None]
    j = da.arange(n, chunks=chunk, dtype=np.float64)[None, :]
    u = (((i * 7.0 + j * 13.0) % 101.0) / 100.0).persist()
    wait(u)
    sum0 = float(u.sum().compute())
    started = time.perf_counter()
    for _ in range(steps):
        u = u.map_overlap(step, depth=1, boundary="periodic", dtype=np.float64).persist()
        wait(u)
    seconds = time.perf_counter() - started
    total, sumsq = (float(v) for v in dask.compute(u.sum(), (u * u).sum()))
    if abs(total - sum0) > 1e-9 * abs(sum0):
        fail(f"the sum went from {sum0!r} to {total!r}: not conserved")
    print(
        f"RESULT name=stencil seconds={seconds:.6f} sum0={sum0!r} sum={total!r} sumsq={sumsq!r}",
        flush=True,
    )


def tsqr(client, rows, cols, chunk_rows):
    import dask
    import dask.array as da
    from dask.distributed import wait

    x = da.random.RandomState(SEED).normal(0.0, 1.0, (rows, cols), chunks=(chunk_rows, cols)).persist()
    wait(x)
    started = time.perf_counter()
    q, r = da.linalg.tsqr(x)
    r, column_sums = dask.compute(r, (q**2).sum(axis=0))
    seconds = time.perf_counter() - started
    qsq = float(column_sums.sum())
    check_qr(qsq, r, rows, cols)
    print(f"RESULT name=tsqr seconds={seconds:.6f} qsq={qsq!r} r00={float(r[0, 0])!r}", flush=True)


def svd(client, rows, cols, chunk_rows, k, n_power_iter):
    import dask
    import dask.array as da
    import numpy as np
    from dask.distributed import wait

    state = da.random.RandomState(SEED)
    a = state.normal(0.0, 1.0, (rows, k), chunks=(chunk_rows, k))
    b = state.normal(0.0, 1.0, (k, cols), chunks=(k, cols))
    noise = state.normal(0.0, 0.01, (rows, cols), chunks=(chunk_rows, cols))
    x = (a @ b + noise).persist()
    wait(x)
    started = time.perf_counter()
    u, s, v = da.linalg.svd_compressed(x, k=k, n_power_iter=n_power_iter, seed=SEED + 3)
    u, s, v = dask.persist(u, s, v)
    wait([u, s, v])
    seconds = time.perf_counter() - started
    values = s.compute()
    if values.shape != (k,) or not np.all(np.diff(values) <= 0.0):
        fail(f"the singular values are not {k} decreasing values: {values!r}")
    residual, norm = dask.compute(((x - (u * s) @ v) ** 2).sum(), (x**2).sum())
    error = float(np.sqrt(residual / norm))
    if not error < 0.01:
        fail(f"the relative reconstruction error is {error!r}, not below 0.01")
    print(f"RESULT name=svd seconds={seconds:.6f} error={error!r}", flush=True)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    arity = {"stencil": 5, "tsqr": 5, "svd": 7, "numpy_qr": 2}
    if mode not in arity or len(sys.argv) != 2 + arity[mode]:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    args = sys.argv[2:]
    if mode == "numpy_qr":
        numpy_qr(*(int(a) for a in args))
        return
    from dask_mpi import initialize

    limit, directory = int(args[-2]), args[-1]
    # The scheduler and worker ranks stay in here and exit at the end.
    initialize(memory_limit=limit, local_directory=directory)

    # ---- only rank 1 (the client) gets here ----
    from dask.distributed import Client
    from mpi4py import MPI

    client = Client()
    client.wait_for_workers(MPI.COMM_WORLD.Get_size() - 2)
    sizes = [int(a) for a in args[:-2]]
    {"stencil": stencil, "tsqr": tsqr, "svd": svd}[mode](client, *sizes)
    # dask_mpi's atexit hook closes the scheduler and the workers.


if __name__ == "__main__":
    main()
