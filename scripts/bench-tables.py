#!/usr/bin/env python3
"""Markdown tables of a `make bench` run, from its results file.

    python3 scripts/bench-tables.py [target/bench/results.json]

One table per bench, its figures in the order they were printed: name, median, min, max,
n, unit and baseline. BENCHMARKS.md is written from this output (plus what each figure
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


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "target/bench/results.json"
    with open(path) as f:
        figures = json.load(f)
    if not figures:
        sys.exit(f"{path} holds no figures")
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
