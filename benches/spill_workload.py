"""The `spill_workload` bench's peer: dask.array on a dask-mpi cluster whose workers hold
half of the array at most (the same per-worker memory limit as mpidask's workers).

    mpirun -np N python spill_workload.py ROWS COLS CHUNK_ROWS CHUNK_COLS LIMIT DIR

Rank 1 times, each from the call to the value on the client:

    x = da.random.random((ROWS, COLS), chunks=(CHUNK_ROWS, CHUNK_COLS)).persist(); wait(x)
    x.sum().compute()
    abs(x - x.mean(0)).max().compute()

and prints `RESULT name=spill_persist|spill_sum|spill_center_max seconds=<s> check=<v>`.
The workers get `memory_limit=LIMIT` (bytes) and spill into `DIR` (Dask's thresholds:
spill from 70 % of the limit, pause at 80 %).
"""

import sys
import time

from dask_mpi import initialize

rows, cols, chunk_rows, chunk_cols, limit = (int(float(a)) for a in sys.argv[1:6])
initialize(memory_limit=limit, local_directory=sys.argv[6])

import dask.array as da  # noqa: E402
from dask.distributed import Client, wait  # noqa: E402
from mpi4py import MPI  # noqa: E402


def main():
    client = Client()
    client.wait_for_workers(MPI.COMM_WORLD.Get_size() - 2)
    started = time.perf_counter()
    x = da.random.random((rows, cols), chunks=(chunk_rows, chunk_cols)).persist()
    wait(x)
    print(f"RESULT name=spill_persist seconds={time.perf_counter() - started:.6f} check=0", flush=True)
    started = time.perf_counter()
    total = float(x.sum().compute())
    print(f"RESULT name=spill_sum seconds={time.perf_counter() - started:.6f} check={total!r}", flush=True)
    started = time.perf_counter()
    spread = float(abs(x - x.mean(0)).max().compute())
    print(
        f"RESULT name=spill_center_max seconds={time.perf_counter() - started:.6f} check={spread!r}",
        flush=True,
    )


if __name__ == "__main__":
    main()
