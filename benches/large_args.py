"""The `futures_large_args` bench's peer: `client.map` over large NumPy arrays on a
dask-mpi cluster, mapped twice and summed (the same as `benches/futures.rs` does).

    mpirun -np N python large_args.py NAME:COUNT:LEN [NAME:COUNT:LEN ...]

For each variant, rank 1 builds COUNT arrays of LEN float64 values (item i holds
`i + j * 1e-6`, untimed), then times, from the first `map` to the total on the client:

    a = client.map(twice_plus_one, items)
    b = client.map(vector_sum, a)
    total = client.submit(sum, b).result()

and prints `RESULT name=NAME seconds=<s>`. The total is checked against its closed form.
"""

import sys
import time

from dask_mpi import initialize

initialize()  # the scheduler and worker ranks stay in here

import numpy as np  # noqa: E402
from dask.distributed import Client  # noqa: E402
from mpi4py import MPI  # noqa: E402


def twice_plus_one(x):
    return 2.0 * x + 1.0


def vector_sum(x):
    return float(x.sum())


def total(values):
    return sum(values)


def expected(count, length):
    values = count * (count - 1) / 2 * length + count * (length * (length - 1) / 2) * 1e-6
    return 2.0 * values + count * length


def main():
    variants = [(n, int(c), int(l)) for n, c, l in (a.split(":") for a in sys.argv[1:])]
    client = Client()
    client.wait_for_workers(MPI.COMM_WORLD.Get_size() - 2)
    # A first task, so no variant pays for the workers' first steps.
    assert client.submit(vector_sum, np.ones(8)).result() == 8.0
    for name, count, length in variants:
        ramp = np.arange(length, dtype=np.float64) * 1e-6
        items = [ramp + i for i in range(count)]
        started = time.perf_counter()
        a = client.map(twice_plus_one, items)
        b = client.map(vector_sum, a)
        result = client.submit(total, b).result()
        seconds = time.perf_counter() - started
        want = expected(count, length)
        if abs(result - want) > 1e-9 * abs(want):
            raise SystemExit(f"{name}: total {result}, expected {want}")
        print(f"RESULT name={name} seconds={seconds:.6f}", flush=True)
        del a, b, items


if __name__ == "__main__":
    main()
