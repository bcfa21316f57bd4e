"""The `dataset_mean` bench's peer: xarray on a dask-mpi cluster reads a Zarr store,
takes the mean over time and writes it to another store, as mpidask's
`Dataset::open_zarr(..).mean("time").to_zarr(..)` does.

    mpirun -np N python xarray_mean.py SOURCE.zarr OUT.zarr

Times `xr.open_zarr(SOURCE).mean("time").to_zarr(OUT, mode="w")` on the client and
prints `MEASURE seconds=<s>` and `MEASURE sum=<sum of the written mean>`.
"""

import sys
import time

from dask_mpi import initialize

initialize()  # the scheduler and worker ranks stay in here

import xarray as xr  # noqa: E402
from dask.distributed import Client  # noqa: E402
from mpi4py import MPI  # noqa: E402


def main():
    source, out = sys.argv[1], sys.argv[2]
    client = Client()
    client.wait_for_workers(MPI.COMM_WORLD.Get_size() - 2)
    started = time.perf_counter()
    xr.open_zarr(source).mean("time").to_zarr(out, mode="w")
    seconds = time.perf_counter() - started
    total = float(xr.open_zarr(out).t.sum())
    print(f"MEASURE seconds={seconds:.6f}", flush=True)
    print(f"MEASURE sum={total!r}", flush=True)


if __name__ == "__main__":
    main()
