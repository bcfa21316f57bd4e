//! The word count shared by `examples/wordcount.rs` and `benches/bags.rs`: the tokenizer,
//! the synthetic corpus, the bag pipeline and the sequential count it is checked and
//! measured against.

#![allow(dead_code)] // each includer uses part of it

use anyhow::Context;
use mpidask::Client;
use mpidask::bag::Bag;
use rustc_hash::FxHashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The words of a line: runs of letters, lower-cased.
pub fn words_of(line: String) -> Vec<String> {
    line.split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

pub fn count_of(pair: &(String, u64)) -> u64 {
    pair.1
}

/// Writes `mb` MB of pseudo-text (a Zipf-like vocabulary) in 8 files under `dir`.
pub fn generate(dir: &str, mb: u64) -> anyhow::Result<String> {
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

/// Word frequencies of the files matching `pattern` with a bag: one task per block of
/// `blocksize` bytes reads it, splits it into words and counts them (the steps are fused),
/// and one more task merges the counts. Most frequent first.
pub fn bag_frequencies(
    client: &Client,
    pattern: &str,
    blocksize: u64,
) -> mpidask::Result<Bag<(String, u64)>> {
    Ok(Bag::read_text(client, pattern, blocksize)?
        .flat_map(words_of)
        .frequencies())
}

/// The same count, sequentially on one thread: each file line by line, the same `words_of`,
/// the same hash map type as the bag's `frequencies` (`FxHashMap`).
pub fn sequential_frequencies(files: &[PathBuf]) -> anyhow::Result<FxHashMap<String, u64>> {
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    for file in files {
        let reader = std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        );
        for line in reader.lines() {
            let line = line.with_context(|| format!("reading {}", file.display()))?;
            for word in words_of(line) {
                *counts.entry(word).or_default() += 1;
            }
        }
    }
    Ok(counts)
}
