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

use anyhow::{Context, bail, ensure};
use clap::Parser;
use mpidask::bag::Bag;
use std::collections::HashMap;
use std::io::Write;
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

/// The words of a line: runs of letters, lower-cased.
fn words_of(line: String) -> Vec<String> {
    line.split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn count_of(pair: &(String, u64)) -> u64 {
    pair.1
}

/// Writes `mb` MB of pseudo-text (a Zipf-like vocabulary) in 8 files under `dir`.
fn generate(dir: &str, mb: u64) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    let vocabulary: Vec<String> = (0..5000)
        .map(|i| {
            let mut word = String::new();
            let mut n = i + 1;
            while n > 0 {
                word.push((b'a' + (n % 26) as u8) as char);
                n /= 26;
            }
            word
        })
        .collect();
    let files = 8;
    let per_file = mb * 1_000_000 / files;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for f in 0..files {
        let path = format!("{dir}/part-{f}.txt");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut written = 0;
        let mut line_words = 0;
        while written < per_file {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Small indices are much more likely: word i with probability about 1/(i+1).
            let rank = ((state % 1_000_000) as f64 / 1_000_000.0 * 8.5).exp() as usize;
            let word = &vocabulary[(rank - 1).min(vocabulary.len() - 1)];
            out.write_all(word.as_bytes())?;
            line_words += 1;
            let end = if line_words == 12 { b"\n" } else { b" " };
            if line_words == 12 {
                line_words = 0;
            }
            out.write_all(end)?;
            written += word.len() as u64 + 1;
        }
        out.write_all(b"\n")?;
    }
    Ok(format!("{dir}/part-*.txt"))
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        let pattern = match (&cli.input, cli.generate_mb) {
            (Some(pattern), _) => pattern.clone(),
            (None, Some(mb)) => generate(&cli.corpus_dir, mb)?,
            (None, None) => bail!("give --input <glob> or --generate-mb <n>"),
        };
        let files = mpidask::bag::expand_glob(&pattern)?;
        let bytes: u64 = files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum();
        let started = Instant::now();
        let words = Bag::read_text(client, &pattern, cli.blocksize)?.flat_map(words_of);
        let total = words.count();
        let frequencies = words.frequencies();
        let counts = frequencies.result()?;
        let total = total.result()?;
        let top = Bag::from_sequence(client, counts.clone(), 1)?
            .topk(10, count_of)
            .result()?;
        let seconds = started.elapsed().as_secs_f64();
        for (word, n) in &top {
            println!("{n:>10}  {word}");
        }
        println!(
            "RESULT bytes={bytes} words={total} distinct={} seconds={seconds:.6}",
            counts.len()
        );
        if cli.check {
            let mut expected: HashMap<String, u64> = HashMap::new();
            for file in &files {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                for word in text.lines().flat_map(|l| words_of(l.to_string())) {
                    *expected.entry(word).or_default() += 1;
                }
            }
            let got: HashMap<String, u64> = counts.into_iter().collect();
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
