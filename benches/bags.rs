//! Benchmarks of bags under `mpirun -np 4` (2 workers), against a baseline measured in the
//! same run. Prints `BENCH name=<id> value=<median> unit=<unit> median= min= max= n=` lines
//! (see `benches/common`).
//!
//! ```text
//! cargo bench --bench bags                      # wordcount_mb_per_s on a 1 GB corpus
//! MPIDASK_BENCH_CORPUS_MB=200 cargo bench --bench bags
//! ```
//!
//! `wordcount_mb_per_s`: the word count of `examples/wordcount.rs` (read_text, flat_map,
//! frequencies) over a generated corpus, one launch per round, against the same count done
//! sequentially on one thread with the same tokenizer and the same hash map type
//! (`sequential_frequencies`, `FxHashMap`), timed in the same round just before the launch.
//! Every launch compares every word's count with the sequential count's. The target is
//! 0.8 x workers x the sequential rate (`wordcount_vs_target` 1 means that). The binary is also the job it measures: started
//! with `MPIDASK_BENCH_ROLE=wordcount` (under `mpirun`) it runs the count.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../examples/common/wordcount.rs"]
mod wordcount;

use common::{figure, ratio, rounds, size};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{mpirun, run_with_deadline};

const NP: usize = 4;
const WORKERS: usize = NP - 2;
const DEADLINE: Duration = Duration::from_secs(1200);
const BLOCKSIZE: u64 = 32 << 20;

/// The job: counts the corpus once (timed), then checks every word's count against a
/// sequential count (untimed).
fn role_wordcount(client: &mpidask::Client) -> anyhow::Result<()> {
    let pattern = std::env::var("MPIDASK_BENCH_CORPUS")?;
    let started = Instant::now();
    let counts = wordcount::bag_frequencies(client, &pattern, BLOCKSIZE)?.compute()?;
    println!("MEASURE seconds={}", started.elapsed().as_secs_f64());
    let files = mpidask::bag::expand_glob(&pattern)?;
    let expected = wordcount::sequential_frequencies(&files)?;
    anyhow::ensure!(
        counts.len() == expected.len(),
        "{} distinct words, the sequential count has {}",
        counts.len(),
        expected.len()
    );
    for (word, n) in &counts {
        anyhow::ensure!(
            expected.get(word) == Some(n),
            "{word:?}: counted {n}, the sequential count has {:?}",
            expected.get(word)
        );
    }
    println!("MEASURE checked_words={}", counts.len());
    Ok(())
}

fn main() {
    if std::env::var("MPIDASK_BENCH_ROLE").as_deref() == Ok("wordcount") {
        mpidask::run(role_wordcount);
    }
    if !common::wanted_by_args()("wordcount_mb_per_s") {
        return;
    }
    let mb: u64 = std::env::var("MPIDASK_BENCH_CORPUS_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(size(1000, 20));
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
    let exe = std::env::current_exe().expect("current exe");
    let mb = bytes as f64 / 1e6;
    let (mut ours, mut sequential) = (vec![], vec![]);
    for _ in 0..rounds() {
        let started = Instant::now();
        let counts = wordcount::sequential_frequencies(&files).expect("a sequential count");
        sequential.push(mb / started.elapsed().as_secs_f64());
        assert!(!counts.is_empty(), "the corpus has words");
        let mut command: Command = mpirun(NP, &exe, &[]);
        command
            .env("MPIDASK_BENCH_ROLE", "wordcount")
            .env("MPIDASK_BENCH_CORPUS", &pattern);
        let run = run_with_deadline(command, DEADLINE);
        run.expect_code(0);
        assert_eq!(
            run.measures("checked_words"),
            vec![counts.len() as f64],
            "every word checked"
        );
        ours.push(mb / run.measures("seconds")[0]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    figure("wordcount_mb_per_s", "MB/s", &ours, None);
    figure("wordcount_sequential_mb_per_s", "MB/s", &sequential, None);
    ratio(
        "wordcount_vs_sequential",
        &ours,
        &sequential,
        false,
        "wordcount_sequential_mb_per_s",
    );
    let target: Vec<f64> = ours
        .iter()
        .zip(&sequential)
        .map(|(o, s)| o / s / (0.8 * WORKERS as f64))
        .collect();
    figure(
        "wordcount_vs_target",
        "x",
        &target,
        Some("wordcount_sequential_mb_per_s"),
    );
    println!("# corpus: {mb:.0} MB");
}
