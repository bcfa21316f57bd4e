//! Benchmarks of bags under `mpirun -np 4` (2 workers), with their baseline measured in the
//! same run. Prints one `BENCH name=<id> value=<number> unit=<unit>` line per figure.
//!
//! ```text
//! cargo bench --bench bags                      # wordcount_mb_per_s on a 1 GB corpus
//! MPIDASK_BENCH_CORPUS_MB=200 cargo bench --bench bags
//! ```
//!
//! `wordcount_mb_per_s`: the word count of `examples/wordcount.rs` (read_text, flat_map,
//! frequencies) over a generated corpus, against the same count done sequentially on one
//! thread with the same tokenizer (`sequential_frequencies`, the faster of a run before and
//! one after the job). The target is
//! 0.8 x workers x the sequential rate. The binary is also the job it measures: started
//! with `MPIDASK_BENCH_ROLE=wordcount` (under `mpirun`) it runs the count.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../examples/common/wordcount.rs"]
mod wordcount;

use std::process::Command;
use std::time::{Duration, Instant};
use support::{bench, median, mpirun, run_with_deadline};

const NP: usize = 4;
const WORKERS: usize = NP - 2;
const DEADLINE: Duration = Duration::from_secs(1200);
const REPEATS: usize = 3;
const BLOCKSIZE: u64 = 32 << 20;

/// The job: counts the corpus `REPEATS` times, printing each time and the totals.
fn role_wordcount(client: &mpidask::Client) -> anyhow::Result<()> {
    let pattern = std::env::var("MPIDASK_BENCH_CORPUS")?;
    for _ in 0..REPEATS {
        let started = Instant::now();
        let counts = wordcount::bag_frequencies(client, &pattern, BLOCKSIZE)?.compute()?;
        println!("MEASURE seconds={}", started.elapsed().as_secs_f64());
        let words: u64 = counts.iter().map(|(_, n)| n).sum();
        println!("MEASURE words={words}");
        println!("MEASURE distinct={}", counts.len());
    }
    Ok(())
}

fn main() {
    if std::env::var("MPIDASK_BENCH_ROLE").as_deref() == Ok("wordcount") {
        mpidask::run(role_wordcount);
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !(filters.is_empty()
        || filters
            .iter()
            .any(|f| "wordcount_mb_per_s".contains(f.as_str())))
    {
        return;
    }
    let mb: u64 = std::env::var("MPIDASK_BENCH_CORPUS_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("mpidask-bench-corpus-{}", std::process::id()));
    let pattern = wordcount::generate(&dir.display().to_string(), mb).expect("a corpus");
    let files = mpidask::bag::expand_glob(&pattern).expect("the corpus files");
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).expect("a corpus file").len())
        .sum();

    // The corpus is written to disk before anything is timed, and stays in the page cache.
    let synced = Command::new("sync").status().expect("sync runs");
    assert!(synced.success(), "sync failed");
    let sequential = || {
        let started = Instant::now();
        let counts = wordcount::sequential_frequencies(&files).expect("a sequential count");
        (counts, started.elapsed().as_secs_f64())
    };
    // The baseline runs before and after the job; the faster run counts.
    let (expected, first_seconds) = sequential();

    let exe = std::env::current_exe().expect("current exe");
    let mut command: Command = mpirun(NP, &exe, &[]);
    command
        .env("MPIDASK_BENCH_ROLE", "wordcount")
        .env("MPIDASK_BENCH_CORPUS", &pattern);
    let run = run_with_deadline(command, DEADLINE);
    run.expect_code(0);
    let (_, second_seconds) = sequential();
    let sequential_seconds = first_seconds.min(second_seconds);
    let _ = std::fs::remove_dir_all(&dir);

    let words: u64 = expected.values().sum();
    for (name, value) in [("words", words as f64), ("distinct", expected.len() as f64)] {
        let got = run.measures(name);
        assert!(
            got.len() == REPEATS && got.iter().all(|g| *g == value),
            "the bag count's {name} {got:?} differ from the sequential {value}"
        );
    }
    let mb = bytes as f64 / 1e6;
    let ours = mb / median(run.measures("seconds"));
    let sequential = mb / sequential_seconds;
    let ratio = ours / sequential;
    bench("wordcount_mb_per_s", ours, "MB/s");
    bench("wordcount_sequential_mb_per_s", sequential, "MB/s");
    bench("wordcount_vs_sequential", ratio, "x");
    bench(
        "wordcount_vs_target",
        ratio / (0.8 * WORKERS as f64),
        "x (1 = 0.8 x workers x sequential)",
    );
    bench("wordcount_corpus_mb", mb, "MB");
}
