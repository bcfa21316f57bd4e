"""The array suite's workloads in Python: dask.array on a dask-mpi cluster (the bench's
peer), or NumPy on the inputs mpidask used (the correctness test's reference).

    mpirun -np N python array_suite.py dask SIZES_JSON
    python array_suite.py numpy SUITE_JSON

`SIZES_JSON` is the object `benches/arrays.rs` passes (shapes and chunks, the same for
mpidask). In `dask` mode rank 1 persists the inputs (untimed), then times each workload
once, from the call to the value, and prints `RESULT name=<workload> seconds=<s>
check=<number>` per workload (and `name=dot_numpy`: the dot's product by NumPy, with the
machine's BLAS, in the client process).

`SUITE_JSON` is what the test `tests/array_suite.rs` writes: the inputs mpidask used and
its result for every workload. `numpy` mode computes each workload with NumPy on those
inputs, compares values (`numpy.allclose`, rtol 1e-9) and prints `OK <name>` or
`MISMATCH <name> ...`; it exits 1 on any mismatch or a missing workload.

The list of workloads is the one of `tests/support/array_suite.rs`; each name, shape and
expression must match it.
"""

import json
import sys
import time


def rechunk(a, chunks):
    return a.rechunk(chunks) if hasattr(a, "rechunk") else a


def map_blocks(a, f):
    return a.map_blocks(f) if hasattr(a, "map_blocks") else f(a)


def sqrt_twice(block):
    """The suite's map_blocks function (mpidask: `sqrt_twice` in the Rust suite)."""
    import numpy as np

    return np.sqrt(block) * 2.0


def dot_operand(I, S):
    m = S["dot"]
    return I["x"][:m, :m]


def workloads(S):
    """(name, function of the inputs and the array module)."""
    n = S["n"]
    thin = S["thin"]
    return [
        ("standardize", lambda I, xp: ((I["x"] - I["x"].mean(0)) / I["x"].std(0)).sum(1)),
        ("x_plus_xt_mean", lambda I, xp: (I["x"] + I["x"].T).mean(0)),
        ("xt_sum", lambda I, xp: I["x"].T.sum()),
        ("xt_sum_axis1", lambda I, xp: I["x"].T.sum(1)),
        ("rechunk_to_columns", lambda I, xp: rechunk(I["x"], (n, thin)).sum(0)),
        ("rechunk_to_rows", lambda I, xp: rechunk(I["w"], (thin, n // 4)).sum(1)),
        ("strided_slice_sum", lambda I, xp: I["x"][::2, n // 4 : 3 * n // 4].sum(1)),
        ("argmax_rows", lambda I, xp: I["x"].argmax(1)),
        ("argmin_columns", lambda I, xp: I["x"].argmin(0)),
        ("where_sum", lambda I, xp: xp.where(I["x"] > 0.5, I["x"], 2 * I["x"]).sum()),
        (
            "dot",
            lambda I, xp: dot_operand(I, S).dot(dot_operand(I, S).T).sum(0),
        ),
        ("normal_sum", lambda I, xp: I["normal"].sum()),
        ("uniform_sum", lambda I, xp: I["uniform"].sum()),
        ("var_columns", lambda I, xp: I["x"].var(0)),
        ("std_rows", lambda I, xp: I["x"].std(1)),
        ("concatenate_sum", lambda I, xp: xp.concatenate([I["x"], I["x"] * 2], axis=0).sum(0)),
        ("map_blocks_sum", lambda I, xp: map_blocks(I["x"], sqrt_twice).sum()),
        ("mean_3d_middle", lambda I, xp: I["z"].mean(1)),
    ]


def check_number(value):
    """One number summing a result up, printed beside the time (the bench's sanity check)."""
    import numpy as np

    return float(np.asarray(value, dtype=np.float64).sum())


def run_dask(S):
    from dask_mpi import initialize

    initialize()  # the scheduler and worker ranks stay in here

    # ---- only rank 1 (the client) gets here ----
    import numpy as np

    import dask.array as da
    from dask.distributed import Client, wait

    client = Client()
    client.wait_for_workers(S["workers"])
    n, c = S["n"], S["chunk"]
    x = da.random.random((n, n), chunks=(c, c)).persist()
    w = da.random.random((n, n // 4), chunks=(n, S["thin"])).persist()
    z = da.random.random(tuple(S["z_shape"]), chunks=tuple(S["z_chunks"])).persist()
    wait([x, w, z])
    g, gc = S["generated"], S["gen_chunk"]
    inputs = {
        "x": x,
        "w": w,
        "z": z,
        "normal": da.random.normal(0.0, 1.0, (g, g), chunks=(gc, gc)),
        "uniform": da.random.uniform(0.0, 1.0, (g, g), chunks=(gc, gc)),
    }
    for name, f in workloads(S):
        started = time.perf_counter()
        value = f(inputs, da).compute()
        seconds = time.perf_counter() - started
        print(f"RESULT name={name} seconds={seconds:.6f} check={check_number(value)!r}", flush=True)
    # The dot's product by NumPy alone, in this process (the machine's BLAS, its threads).
    a = dot_operand(inputs, S).compute()
    started = time.perf_counter()
    product = a.dot(a.T).sum(0)
    seconds = time.perf_counter() - started
    print(f"RESULT name=dot_numpy seconds={seconds:.6f} check={check_number(product)!r}", flush=True)
    # dask_mpi's atexit hook closes the scheduler and the workers.


def run_numpy(path):
    import numpy as np

    with open(path) as f:
        suite = json.load(f)
    S = suite["sizes"]

    def array(entry):
        return np.array(entry["values"], dtype=np.float64).reshape(entry["shape"])

    inputs = {name: array(entry) for name, entry in suite["inputs"].items()}
    results = suite["results"]
    bad = 0
    for name, f in workloads(S):
        want = np.asarray(f(inputs, np), dtype=np.float64)
        if name not in results:
            print(f"MISSING {name}: mpidask gave no result")
            bad += 1
            continue
        got = array(results[name])
        if got.shape != want.shape:
            print(f"MISMATCH {name}: shape {got.shape}, NumPy {want.shape}")
            bad += 1
        elif not np.allclose(got, want, rtol=1e-9, atol=1e-9):
            worst = float(np.max(np.abs(got - want)))
            print(f"MISMATCH {name}: largest difference {worst:.3e}")
            bad += 1
        else:
            print(f"OK {name}")
    extra = sorted(set(results) - {name for name, _ in workloads(S)})
    for name in extra:
        print(f"UNKNOWN {name}: not a workload of this script")
        bad += 1
    return 1 if bad else 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("dask", "numpy"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "dask":
        run_dask(json.loads(sys.argv[2]))
        return 0
    return run_numpy(sys.argv[2])


if __name__ == "__main__":
    sys.exit(main())
