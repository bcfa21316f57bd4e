#!/usr/bin/env python3
"""Markdown tables of a `make bench` run, from its results file.

    python3 scripts/bench-tables.py [target/bench/results.json]
    python3 scripts/bench-tables.py --suite [target/bench/results.json]

One table per bench, its figures in the order they were printed: name, median, min, max,
n, unit and baseline. With `--suite`, the array suite's workloads side by side: mpidask's
time, dask-mpi's, and the ratio (median [min-max], run by run). BENCHMARKS.md is written from this output (plus what each figure
means), so its numbers are exactly the run's.
"""

import json
import sys


def fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def suite(figures):
    by_name = {fig["name"]: fig for fig in figures}
    print("| workload | mpidask s | dask-mpi s | speed-up vs dask-mpi | n |")
    print("|---|---|---|---|---|")
    for fig in figures:
        name = fig["name"]
        if not (name.startswith("arrays_") and name.endswith("_s")) or "_daskmpi_" in name:
            continue
        workload = name[len("arrays_") : -len("_s")]
        peer = by_name.get(f"arrays_{workload}_daskmpi_s")
        ratio = by_name.get(f"arrays_{workload}_vs_daskmpi")
        if peer is None or ratio is None:
            continue
        print(
            f"| `{workload}` | {fmt(fig['median'])} | {fmt(peer['median'])} | "
            f"{fmt(ratio['median'])}x [{fmt(ratio['min'])}-{fmt(ratio['max'])}] | {ratio['n']} |"
        )
    print()


def main():
    args = [a for a in sys.argv[1:] if a != "--suite"]
    path = args[0] if args else "target/bench/results.json"
    with open(path) as f:
        figures = json.load(f)
    if not figures:
        sys.exit(f"{path} holds no figures")
    if "--suite" in sys.argv[1:]:
        suite(figures)
        return
    benches = []
    for fig in figures:
        if fig["bench"] not in benches:
            benches.append(fig["bench"])
    for bench in benches:
        print(f"### `benches/{bench}.rs`\n")
        print("| name | median | min | max | n | unit | baseline |")
        print("|---|---|---|---|---|---|---|")
        for fig in figures:
            if fig["bench"] != bench:
                continue
            baseline = f"`{fig['baseline']}`" if fig.get("baseline") else ""
            print(
                f"| `{fig['name']}` | {fmt(fig['median'])} | {fmt(fig['min'])} | "
                f"{fmt(fig['max'])} | {fig['n']} | {fig['unit']} | {baseline} |"
            )
        print()


if __name__ == "__main__":
    main()
