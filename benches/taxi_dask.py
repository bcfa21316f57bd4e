"""The taxi benchmarks' peer: dask.dataframe on a dask-mpi cluster, reading the Parquet
files `benches/dataframes.rs` wrote (the same files mpidask reads).

    mpirun -np N python taxi_dask.py DIR WORKERS

Rank 1 times each workload once, from the call to the value on the client (the files are
read inside the timing, as mpidask reads them inside its own):

    df = dd.read_parquet(DIR, columns=["passenger_count", "fare_amount", "tip_amount"])
    df = df[df.fare_amount > 0]
    df.assign(tip_fraction=df.tip_amount / df.fare_amount) \
        .groupby("passenger_count").tip_fraction.mean().compute()          # taxi_groupby

    df = dd.read_parquet(DIR, columns=["PULocationID", "fare_amount"])
    df.merge(zones, left_on="PULocationID", right_on="LocationID", how="left") \
        .groupby("Borough").fare_amount.agg(["count", "mean"]).compute()     # taxi_merge

`zones` is the 265-row zone table of `examples/taxi/data.rs` as a pandas frame (a merge
with a pandas frame is Dask's broadcast join). It prints `RESULT name=<workload>
seconds=<s> check=<number> rows=<trips counted>`: the check is the sum of the means, the
number the bench compares with mpidask's.
"""

import sys
import time

from dask_mpi import initialize

initialize()  # the scheduler and worker ranks stay in here

# ---- only rank 1 (the client) gets here ----
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402
from dask.distributed import Client  # noqa: E402

BOROUGHS = ["Manhattan", "Brooklyn", "Queens", "Bronx", "Staten Island", "EWR"]


def zones():
    ids = list(range(1, 266))
    return pd.DataFrame(
        {
            "LocationID": pd.Series(ids, dtype="int32"),
            "Borough": [BOROUGHS[(i * 7) % 6] for i in ids],
            "Zone": [f"Zone {i}" for i in ids],
        }
    )


def groupby(path):
    df = dd.read_parquet(path, columns=["passenger_count", "fare_amount", "tip_amount"])
    df = df[df.fare_amount > 0]
    means = (
        df.assign(tip_fraction=df.tip_amount / df.fare_amount)
        .groupby("passenger_count")
        .tip_fraction.mean()
        .compute()
    )
    return float(means.sum()), -1


def merge(path, table):
    df = dd.read_parquet(path, columns=["PULocationID", "fare_amount"])
    result = (
        df.merge(table, left_on="PULocationID", right_on="LocationID", how="left")
        .groupby("Borough")
        .fare_amount.agg(["count", "mean"])
        .compute()
    )
    return float(result["mean"].sum()), int(result["count"].sum())


def main():
    path, workers = sys.argv[1], int(sys.argv[2])
    client = Client()
    client.wait_for_workers(workers)
    table = zones()
    for name, run in [("taxi_groupby", lambda: groupby(path)), ("taxi_merge", lambda: merge(path, table))]:
        started = time.perf_counter()
        check, rows = run()
        seconds = time.perf_counter() - started
        print(f"RESULT name={name} seconds={seconds:.6f} check={check!r} rows={rows}", flush=True)
    # dask_mpi's atexit hook closes the scheduler and the workers.


main()
