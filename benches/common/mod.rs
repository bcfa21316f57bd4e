//! What every benchmark shares: the rules of BENCHMARKS.md in code. A figure is the median
//! of at least [`MIN_RUNS`] runs and is printed with its min, max and n; a ratio is taken
//! run by run against a baseline measured in the same round (interleaved), then its median;
//! every figure is also appended to `target/bench/results.json`; a missing peer or
//! baseline is a failure, never a skip.
//!
//! `MPIDASK_BENCH_SMOKE=1` (what `make test` sets) runs each benchmark once at tiny sizes:
//! the code and its answer checks run, no figure is meant to be read.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Runs behind every figure of a real (not smoke) run.
pub const MIN_RUNS: usize = 5;

/// `true` in a smoke run: one round, tiny sizes.
/// Whether the figure `name` was asked for: every figure without arguments, else those whose
/// name contains one of the arguments (`cargo bench --bench <b> -- <part of a name>`).
pub fn wanted_by_args() -> impl Fn(&str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    move |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}

/// The numbers of each `RESULT name=<name> <key>=<number> ...` line in `stdout`, by name,
/// `keys` in order (a line without one of them, or with a non-number, is `who`'s error).
pub fn named_results(stdout: &str, who: &str, keys: &[&str]) -> BTreeMap<String, Vec<f64>> {
    let mut results = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with("RESULT ")) {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("{who}: no {key} in {line}"))
        };
        let numbers = keys
            .iter()
            .map(|key| {
                field(key)
                    .parse()
                    .unwrap_or_else(|_| panic!("{who}: {key} is not a number in {line}"))
            })
            .collect();
        results.insert(field("name").to_string(), numbers);
    }
    results
}

pub fn smoke() -> bool {
    std::env::var_os("MPIDASK_BENCH_SMOKE").is_some_and(|v| v != "0" && !v.is_empty())
}

/// `true` when `scripts/bench-compare.sh` runs the bench: one run per figure, the script
/// taking the rounds (and the medians) itself.
pub fn one_run_for_compare() -> bool {
    std::env::var_os("MPIDASK_BENCH_COMPARE").is_some_and(|v| v == "1")
}

/// Rounds to run: [`MIN_RUNS`] (or `MPIDASK_BENCH_RUNS`, never fewer), 1 in a smoke run
/// or for `scripts/bench-compare.sh`.
pub fn rounds() -> usize {
    if smoke() || one_run_for_compare() {
        return 1;
    }
    std::env::var("MPIDASK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MIN_RUNS)
        .max(MIN_RUNS)
}

/// The environment variable `variable` as a count (`_` allowed between digits), or
/// `default` when it is not set; a value that is not a count panics, naming it.
pub fn env_count(variable: &str, default: usize) -> usize {
    match std::env::var(variable) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{variable}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// The numbers `keys` of the line `RESULT name=<name> ...` that `who` printed on `stdout`;
/// a panic showing the launch (`dump`) when there is none.
pub fn named_result(
    stdout: &str,
    who: &str,
    name: &str,
    keys: &[&str],
    dump: impl FnOnce() -> String,
) -> Vec<f64> {
    named_results(stdout, who, keys)
        .remove(name)
        .unwrap_or_else(|| panic!("{who} printed no RESULT name={name}\n{}", dump()))
}

/// `real` in a real run, `tiny` in a smoke run.
pub fn size<T>(real: T, tiny: T) -> T {
    if smoke() { tiny } else { real }
}

/// Median, min and max of `samples` (the mean of the two middle values for an even n).
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    assert!(!samples.is_empty(), "no measurement");
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    };
    (median, sorted[0], sorted[n - 1])
}

/// The median of `samples`, as [`stats`] takes it.
pub fn median(samples: &[f64]) -> f64 {
    stats(samples).0
}

/// The bench's own name (the binary's, without cargo's hash).
fn bench_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.split('-').next().unwrap_or(&s).to_string())
        .unwrap_or_default()
}

/// Where figures are collected: `MPIDASK_BENCH_RESULTS`, or `target/bench/results.json`.
pub fn results_path() -> PathBuf {
    std::env::var_os("MPIDASK_BENCH_RESULTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/results.json")
        })
}

/// Prints a figure, `BENCH name=<id> value=<median> unit=<unit> median= min= max= n=`
/// (and `baseline=<id>` when it is compared with one), and appends it to the results file.
/// Panics if a real run has fewer than [`MIN_RUNS`] samples.
pub fn figure(name: &str, unit: &str, samples: &[f64], baseline: Option<&str>) -> f64 {
    assert!(
        smoke() || one_run_for_compare() || samples.len() >= MIN_RUNS,
        "{name}: {} runs, the rules ask for at least {MIN_RUNS}",
        samples.len()
    );
    let (median, min, max) = stats(samples);
    let n = samples.len();
    let against = baseline
        .map(|b| format!(" baseline={b}"))
        .unwrap_or_default();
    println!(
        "BENCH name={name} value={median:.6} unit={unit} median={median:.6} min={min:.6} \
         max={max:.6} n={n}{against}"
    );
    record(serde_json::json!({
        "bench": bench_name(),
        "name": name,
        "unit": unit,
        "median": median,
        "min": min,
        "max": max,
        "n": n,
        "samples": samples,
        "baseline": baseline,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "smoke": smoke(),
    }));
    median
}

/// A ratio, round by round: `ours[i] / theirs[i]` (or its inverse for times, where lower
/// is better: `theirs / ours`, so above 1 is always better for mpidask), reported as a
/// figure against `baseline`.
pub fn ratio(name: &str, ours: &[f64], theirs: &[f64], lower_is_better: bool, baseline: &str) {
    assert_eq!(ours.len(), theirs.len(), "{name}: one baseline run per run");
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .map(|(o, t)| if lower_is_better { t / o } else { o / t })
        .collect();
    figure(name, "x", &ratios, Some(baseline));
}

/// Appends `value` to the results file (an array of figures).
fn record(value: serde_json::Value) {
    let path = results_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    let mut all: Vec<serde_json::Value> = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    all.push(value);
    let text = serde_json::to_string_pretty(&all).expect("figures encode");
    let partial = path.with_extension("json.partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, &path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The Python of the peers' venv (`PEER_VENV`, or `~/.cache/mpidask-peers/venv`), with
/// `module` importable; panics with what to run when it is missing (a missing peer fails
/// the bench).
pub fn peer_python(module: &str) -> PathBuf {
    let venv = std::env::var_os("PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/mpidask-peers/venv")
        });
    let python = venv.join("bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the peer {module} is missing: {} cannot import it. Run `make peers` (which runs \
         ../shared/peers/setup-peers.sh), or set PEER_VENV to a venv that has it",
        python.display()
    );
    python
}

/// The folder of the shared peers' scripts; panics if it is missing.
pub fn shared_peers() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/peers");
    assert!(
        dir.is_dir(),
        "{} is missing: the peers' scripts come from the shared folder next to the project",
        dir.display()
    );
    dir
}

/// A block of bytes that encodes as one byte string: the value the transfer benchmarks move.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Blob(pub serde_bytes::ByteBuf);

/// A task: a [`Blob`] of `len` bytes of `fill`.
pub fn make_blob((len, fill): (usize, u8)) -> Blob {
    Blob(serde_bytes::ByteBuf::from(vec![fill; len]))
}

/// A task: the length of a [`Blob`].
pub fn blob_len(blob: Blob) -> usize {
    blob.0.len()
}

/// A barrier the idle ranks wait in without spinning a core (as mpidask's idle ranks do):
/// a non-blocking barrier tested every millisecond.
pub fn wait_without_spinning(world: &mpi::topology::SimpleCommunicator) {
    use mpi::traits::*;
    let mut request = world.immediate_barrier();
    loop {
        match request.test() {
            Ok(_) => break,
            Err(r) => request = r,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Asks for transparent huge pages under `values`' capacity, as mpidask does for its large
/// buffers: on this machine (THP in `madvise` mode, a virtual machine) streaming through
/// 4 KiB pages runs at a third of the speed, and the comparison is of the loops, not of
/// the pages.
pub fn advise_huge_pages(values: &mut Vec<f64>) {
    const HUGE: usize = 2 << 20;
    let start = (values.as_mut_ptr() as usize).next_multiple_of(HUGE);
    let end = (values.as_mut_ptr() as usize + values.capacity() * 8) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside the vector's allocation; the advice changes only how
        // the kernel backs it.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// A scratch directory under `$TMPDIR` (one launch's spill files, a bench's data), removed
/// when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(who: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("mpidask-bench-{who}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds the hand-written C baseline `benches/<source>` with `compiler` (an environment
/// variable naming it wins, as `MPICC` or `CC`) and `flags`, into `target/bench/<name>`
/// (the source's name without `.c`), and returns the program's path. A missing compiler
/// or a failed build fails the bench, saying what installs it.
pub fn build_c(compiler: (&str, &str), source: &str, flags: &[&str], installs: &str) -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = source.strip_suffix(".c").expect("a .c source");
    let out = root.join("target/bench").join(name);
    std::fs::create_dir_all(out.parent().expect("a parent")).expect("target/bench");
    let (variable, default) = compiler;
    let cc = std::env::var(variable).unwrap_or_else(|_| default.into());
    let status = std::process::Command::new(&cc)
        .args(["-O3", "-march=native", "-o"])
        .arg(&out)
        .arg(root.join("benches").join(source))
        .args(flags)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} to build benches/{source}: {e} ({installs})"));
    assert!(
        status.success(),
        "{cc} failed to build benches/{source} ({installs})"
    );
    out
}
