#!/usr/bin/env bash
# Compares the benchmarks of two builds of mpidask in one run, their launches taking turns:
#
#   scripts/bench-compare.sh OLD_CHECKOUT NEW_CHECKOUT [ROUNDS=6]
#
# Each checkout must have run `cargo bench --no-run` (the bench binaries in
# target/release/deps). Every round runs, for old then new: the runtime, scheduler and bags
# benches (each figure of each is one sample), the 10 GB Pi (mpidask only) and the wall
# time of a spilling job. Prints, per figure, the median, min and max of each side over the
# rounds and new/old. Raw lines go to $OUT (default /tmp/bench-compare.txt).
set -euo pipefail
old=$1 new=$2 rounds=${3:-6}
out=${OUT:-/tmp/bench-compare.txt}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# One run per figure and round (older builds ignore it): the rounds are the samples.
export MPIDASK_BENCH_COMPARE=1
bin() { ls -t "$1"/target/release/deps/"$2"-* | grep -v '\.d$' | head -1; }
: > "$out"
for round in $(seq "$rounds"); do
  for side in old new; do
    dir=$old; [ $side = new ] && dir=$new
    for b in runtime scheduler bags; do
      "$(bin "$dir" $b)" --bench 2>/dev/null | grep '^BENCH' | sed "s/^/$side $b round=$round /" >> "$out"
    done
    s=$(MPIDASK_BENCH_ROLE=runtime MPIDASK_BENCH_BYTES=10000000000 MPIDASK_BENCH_CHUNK_BYTES=200000000 \
        timeout 300 mpirun -np 4 "$(bin "$dir" pi)" 2>/dev/null | sed -n 's/^MEASURE seconds=//p')
    echo "$side pi round=$round BENCH name=pi_10gb_s value=$s unit=s" >> "$out"
    start=$(date +%s.%N)
    MPIDASK_BENCH_ROLE=spill MPIDASK_MEMORY_LIMIT=200MB timeout 300 mpirun -np 4 "$(bin "$dir" runtime)" > /dev/null 2>&1
    end=$(date +%s.%N)
    echo "$side spilljob round=$round BENCH name=spill_job_wall_s value=$(echo "$end - $start" | bc) unit=s" >> "$out"
  done
done
python3 - "$out" <<'PY'
import collections, re, statistics, sys
data = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    m = re.match(r"(old|new) (\w+) round=\d+ BENCH name=(\S+) value=(\S+) unit=(\S+)", line)
    if m:
        side, bench, name, value, unit = m.groups()
        try:
            data[(bench, name, unit)][side].append(float(value))
        except ValueError:
            pass
for (bench, name, unit), sides in sorted(data.items()):
    o, n = sides["old"], sides["new"]
    if o and n:
        mo, mn = statistics.median(o), statistics.median(n)
        print(f"{bench:9} {name:40} old {mo:10.4g} [{min(o):.4g}-{max(o):.4g}] n={len(o)}"
              f"  new {mn:10.4g} [{min(n):.4g}-{max(n):.4g}] n={len(n)} {unit}"
              f"  new/old={mn / mo if mo else 0:.3f}")
PY
