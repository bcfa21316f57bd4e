//! Word frequencies of a text corpus with bags, dask.bag style:
//!
//! ```python
//! b = db.read_text("corpus/*.txt", blocksize=...)
//! counts = b.str.split().flatten().frequencies().topk(10, key=1)
//! ```
//!
//! ```text
//! mpirun -np 4 target/release/examples/wordcount --generate-mb 100 --check
//! mpirun -np 4 target/release/examples/wordcount --input 'corpus/*.txt'
//! ```
//!
//! Prints the ten most frequent words, then
//! `RESULT bytes=<n> words=<n> distinct=<n> seconds=<value>`. With `--check` it also counts
//! sequentially on the client and exits non-zero if the answers differ.

#[path = "common/wordcount.rs"]
mod wordcount;

use anyhow::{bail, ensure};
use clap::Parser;
use std::time::Instant;

/// Word frequencies of a text corpus with mpidask bags.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Files to count (wildcards in the file name), e.g. 'corpus/*.txt'
    #[arg(long, conflicts_with = "generate_mb")]
    input: Option<String>,

    /// First write a synthetic corpus of this many MB (10^6 bytes) and count it
    #[arg(long)]
    generate_mb: Option<u64>,

    /// Where --generate-mb writes its files
    #[arg(long, default_value = "wordcount-corpus")]
    corpus_dir: String,

    /// Bytes per partition read by a worker
    #[arg(long, default_value_t = 32 << 20)]
    blocksize: u64,

    /// Also count sequentially on the client and compare
    #[arg(long)]
    check: bool,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        let pattern = match (&cli.input, cli.generate_mb) {
            (Some(pattern), _) => pattern.clone(),
            (None, Some(mb)) => wordcount::generate(&cli.corpus_dir, mb)?,
            (None, None) => bail!("give --input <glob> or --generate-mb <n>"),
        };
        let files = mpidask::bag::expand_glob(&pattern)?;
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        let started = Instant::now();
        // One task per block: read, split into words, count (the steps are fused).
        let frequencies = wordcount::bag_frequencies(client, &pattern, cli.blocksize)?;
        let top = frequencies.topk(10, wordcount::count_of).compute()?;
        let counts = frequencies.compute()?;
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        let seconds = started.elapsed().as_secs_f64();
        for (word, n) in &top {
            println!("{n:>10}  {word}");
        }
        println!(
            "RESULT bytes={bytes} words={total} distinct={} seconds={seconds:.6}",
            counts.len()
        );
        if cli.check {
            let expected = wordcount::sequential_frequencies(&files)?;
            let got: rustc_hash::FxHashMap<String, u64> = counts.into_iter().collect();
            ensure!(
                got == expected,
                "the counts differ from a sequential count ({} vs {} distinct words)",
                got.len(),
                expected.len()
            );
            println!("CHECK ok: the same counts as a sequential count");
        }
        Ok(())
    })
}
