"""The `ml` bench's peer: dask-ml on a dask-mpi cluster (`benches/ml.rs` launches it with
the same data definition, shapes and chunks as mpidask).

    mpirun -np N python ml_dask.py ROWS COLS CHUNK_ROWS SAMPLE LIMIT DIR WORKLOADS

Rank 0 is dask-mpi's scheduler, rank 1 runs the workload, ranks 2.. are workers of one
thread with `memory_limit=LIMIT` (bytes), spilling into `DIR`. Rank 1 builds and persists
the data (untimed): `x[i, j] = 6 cos(k (j + 1)) + e[i, j]`, `k = i % 8`, `e` standard
normal, and `y = (x . w + 3 f > 0)`, `w[j] = cos(j)`, `f` standard normal. Then, for each
of the comma-separated WORKLOADS, it times, checks (exit 1 when a check fails) and prints
one line:

* `kmeans`: `dask_ml.cluster.KMeans(8, init=6 cos(k (j + 1)) + 0.5, max_iter=10,
  tol=-1)`: 10 iterations and an inertia within 1 % of ROWS x COLS.
  `RESULT name=kmeans seconds=<s> inertia=<per value>`
* `logistic`: `dask_ml.linear_model.LogisticRegression(solver="lbfgs")` (C = 1; its
  default ADMM took over 80 s where L-BFGS takes 17 s on 400,000 rows): training
  accuracy at least 0.7. `RESULT name=logistic seconds=<s> accuracy=<...>`
* `gridsearch`: `dask_ml.model_selection.GridSearchCV(DecisionTreeClassifier(), grid,
  cv=3, refit=False)` over `max_depth` 1, 2, 3, 4, 6, 8 x `min_samples_leaf` 1, 5, 20, 50
  on the first SAMPLE rows, timed from their computation: best score at least 0.7.
  `RESULT name=gridsearch seconds=<s> best=<...>`
"""

import sys
import time
import warnings

SEED = 11
CLUSTERS = 8


def fail(message):
    print(f"CHECK FAILED: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def workload(rows, cols, chunk, sample, chosen):
    import dask.array as da
    import numpy as np
    from dask.distributed import wait

    state = da.random.RandomState(SEED)
    k = (da.arange(rows, chunks=chunk, dtype=np.float64) % CLUSTERS)[:, None]
    j = np.arange(1, cols + 1, dtype=np.float64)[None, :]
    x = 6.0 * da.cos(k * j) + state.normal(0.0, 1.0, (rows, cols), chunks=(chunk, cols))
    w = np.cos(np.arange(cols, dtype=np.float64))
    f = state.normal(0.0, 1.0, rows, chunks=chunk)
    y = ((x @ w + 3.0 * f) > 0).astype(np.int64)
    x, y = x.persist(), y.persist()
    wait([x, y])

    if "kmeans" in chosen:
        kmeans_fit(x, rows, cols)
    if "logistic" in chosen:
        logistic_fit(x, y)
    if "gridsearch" in chosen:
        gridsearch_fit(x, y, sample)


def kmeans_fit(x, rows, cols):
    import numpy as np
    from dask_ml.cluster import KMeans

    centres = 6.0 * np.cos(np.arange(CLUSTERS)[:, None] * np.arange(1, cols + 1)[None, :]) + 0.5
    started = time.perf_counter()
    kmeans = KMeans(n_clusters=CLUSTERS, init=centres, max_iter=10, tol=-1).fit(x)
    seconds = time.perf_counter() - started
    inertia = float(kmeans.inertia_) / (rows * cols)
    if kmeans.n_iter_ != 10:
        fail(f"k-means ran {kmeans.n_iter_} iterations")
    if abs(inertia - 1.0) >= 0.01:
        fail(f"k-means inertia per value {inertia}")
    print(f"RESULT name=kmeans seconds={seconds:.6f} inertia={inertia!r}", flush=True)



def logistic_fit(x, y):
    from dask_ml.linear_model import LogisticRegression

    started = time.perf_counter()
    logistic = LogisticRegression(solver="lbfgs").fit(x, y)
    seconds = time.perf_counter() - started
    accuracy = float((logistic.predict(x) == y).mean().compute())
    if accuracy < 0.7:
        fail(f"logistic regression's accuracy {accuracy}")
    print(f"RESULT name=logistic seconds={seconds:.6f} accuracy={accuracy!r}", flush=True)



def gridsearch_fit(x, y, sample):
    from dask_ml.model_selection import GridSearchCV
    from sklearn.tree import DecisionTreeClassifier

    started = time.perf_counter()
    xs, ys = x[:sample].compute(), y[:sample].compute()
    grid = {"max_depth": [1, 2, 3, 4, 6, 8], "min_samples_leaf": [1, 5, 20, 50]}
    search = GridSearchCV(DecisionTreeClassifier(), grid, cv=3, refit=False).fit(xs, ys)
    seconds = time.perf_counter() - started
    best = float(search.cv_results_["mean_test_score"].max())
    if best < 0.7:
        fail(f"the grid search's best score {best}")
    print(f"RESULT name=gridsearch seconds={seconds:.6f} best={best!r}", flush=True)


def main():
    if len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    rows, cols, chunk, sample, limit = (int(a) for a in sys.argv[1:6])
    directory = sys.argv[6]
    chosen = sys.argv[7].split(",")
    unknown = set(chosen) - {"kmeans", "logistic", "gridsearch"}
    if unknown:
        print(f"unknown workloads {sorted(unknown)}\n{__doc__}", file=sys.stderr)
        sys.exit(2)
    # dask-ml's estimators warn about overflow in exp on the way (their business).
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    from dask_mpi import initialize

    # The scheduler and worker ranks stay in here and exit at the end.
    initialize(memory_limit=limit, local_directory=directory)

    # ---- only rank 1 (the client) gets here ----
    from dask.distributed import Client
    from mpi4py import MPI

    client = Client()
    client.wait_for_workers(MPI.COMM_WORLD.Get_size() - 2)
    workload(rows, cols, chunk, sample, chosen)
    # dask_mpi's atexit hook closes the scheduler and the workers.


if __name__ == "__main__":
    main()
