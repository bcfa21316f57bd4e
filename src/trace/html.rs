//! The task stream as one self-contained HTML page (no network access needed), in the
//! spirit of Dask's `performance_report`: the summary and the failures as tables, and,
//! drawn as SVG by the page's own script from data embedded in it, the task stream (zoom,
//! a tooltip per task), memory per worker with its limit and thresholds, transfers per
//! pair of ranks over time, and progress per task kind over time. The page itself is
//! `report.html`; this module computes its data.

use super::chrome::rank_label;
use super::{Summary, TraceCollector};
use crate::memory::human_bytes;
use crate::protocol::{FnId, Rank, TraceEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// At most this many task runs are drawn (the longest ones); a browser stays responsive.
pub const MAX_DRAWN_TASKS: usize = 100_000;
/// Time bins of the transfer chart.
const TRANSFER_BINS: usize = 120;
/// Points per line of the progress and memory charts, at most.
const MAX_POINTS: usize = 600;

/// One worker's memory over time.
#[derive(Serialize)]
struct MemorySeries {
    label: String,
    /// `--memory-limit`, and the spill and pause thresholds, in bytes (absent without a
    /// limit).
    limit: Option<u64>,
    spill: Option<u64>,
    pause: Option<u64>,
    /// Per sample: time (ms), bytes stored in memory, bytes on disk, resident memory.
    points: Vec<(f64, u64, u64, u64)>,
}

/// Bytes moved from one rank to another, per time bin.
#[derive(Serialize)]
struct TransferSeries {
    label: String,
    bytes: Vec<u64>,
}

/// Tasks of one kind finished over time.
#[derive(Serialize)]
struct ProgressSeries {
    kind: String,
    /// Per point: time (ms), tasks of the kind finished by then.
    points: Vec<(f64, u64)>,
}

/// One task run as the page reads it: row, kind, start (ms), duration (ms), key, ok (1/0),
/// bytes in, bytes out.
type TaskRow = (u32, u32, f64, f64, u64, u8, u64, u64);

#[derive(Serialize)]
struct ReportData {
    /// `true` while the job runs (the page is rewritten every `--report-interval`).
    running: bool,
    rows: Vec<String>,
    kinds: Vec<String>,
    tasks: Vec<TaskRow>,
    span_ms: f64,
    total_tasks: usize,
    memory: Vec<MemorySeries>,
    transfer_bin_ms: f64,
    transfers: Vec<TransferSeries>,
    progress: Vec<ProgressSeries>,
}

/// Keeps at most `max` of `points`, evenly spaced, always the last.
fn thin<T: Copy>(points: Vec<T>, max: usize) -> Vec<T> {
    if points.len() <= max {
        return points;
    }
    let step = points.len().div_ceil(max);
    let last = *points.last().expect("not empty");
    let mut kept: Vec<T> = points.into_iter().step_by(step).collect();
    kept.push(last);
    kept
}

fn report_data(collector: &TraceCollector, running: bool) -> ReportData {
    let origin = collector.start_us;
    let ms = |us: u64| (us as f64 - origin as f64) / 1000.0;
    let mut rows: BTreeMap<(Rank, u32), u32> = BTreeMap::new();
    for (rank, info) in &collector.workers {
        for thread in 0..info.nthreads {
            rows.insert((*rank, thread), 0);
        }
    }
    let mut kinds: BTreeMap<FnId, u32> = BTreeMap::new();
    let mut runs = Vec::new();
    let mut end_us = collector.start_us;
    let mut memory: BTreeMap<Rank, Vec<(f64, u64, u64, u64)>> = BTreeMap::new();
    let mut finished: BTreeMap<FnId, Vec<u64>> = BTreeMap::new();
    // (from, to, arrival time, bytes)
    let mut moves: Vec<(Rank, Rank, u64, u64)> = Vec::new();
    for (rank, event) in &collector.events {
        match event {
            TraceEvent::Task {
                key,
                func,
                thread,
                start_us,
                duration_us,
                ok,
                bytes_in,
                bytes_out,
            } => {
                rows.entry((*rank, *thread)).or_insert(0);
                let next_kind = kinds.len() as u32;
                kinds.entry(*func).or_insert(next_kind);
                end_us = end_us.max(start_us + duration_us);
                if *ok {
                    finished
                        .entry(*func)
                        .or_default()
                        .push(start_us + duration_us);
                }
                runs.push((
                    *rank,
                    *thread,
                    *func,
                    *start_us,
                    *duration_us,
                    key.0,
                    *ok,
                    *bytes_in,
                    *bytes_out,
                ));
            }
            TraceEvent::Memory {
                at_us,
                stored_bytes,
                spilled_bytes,
                rss_bytes,
            } => {
                end_us = end_us.max(*at_us);
                memory.entry(*rank).or_default().push((
                    ms(*at_us),
                    *stored_bytes,
                    *spilled_bytes,
                    *rss_bytes,
                ));
            }
            TraceEvent::Transfer {
                peer,
                nbytes,
                start_us,
                duration_us,
                incoming,
                ..
            } => {
                let at = start_us + duration_us;
                end_us = end_us.max(at);
                let (from, to) = if *incoming {
                    (*peer, *rank)
                } else {
                    (*rank, *peer)
                };
                moves.push((from, to, at, *nbytes));
            }
            TraceEvent::Spill {
                start_us,
                duration_us,
                ..
            } => end_us = end_us.max(start_us + duration_us),
            TraceEvent::Heartbeat { at_us } => end_us = end_us.max(*at_us),
        }
    }
    let span_ms = end_us.saturating_sub(origin) as f64 / 1000.0;

    let total_tasks = runs.len();
    if runs.len() > MAX_DRAWN_TASKS {
        runs.sort_unstable_by_key(|run| std::cmp::Reverse(run.4));
        runs.truncate(MAX_DRAWN_TASKS);
    }
    let mut labels = Vec::with_capacity(rows.len());
    for (index, ((rank, thread), row)) in rows.iter_mut().enumerate() {
        *row = index as u32;
        labels.push(format!("{} t{thread}", rank_label(collector, *rank)));
    }
    let tasks = runs
        .into_iter()
        .map(
            |(rank, thread, func, start, duration, key, ok, bytes_in, bytes_out)| {
                (
                    rows[&(rank, thread)],
                    kinds[&func],
                    ms(start),
                    duration as f64 / 1000.0,
                    key,
                    u8::from(ok),
                    bytes_in,
                    bytes_out,
                )
            },
        )
        .collect();
    let mut kind_names = vec![String::new(); kinds.len()];
    for (func, index) in &kinds {
        kind_names[*index as usize] = collector.kind_name(*func).to_string();
    }

    let memory = collector
        .workers
        .iter()
        .map(|(rank, info)| {
            let threshold = |fraction: f64| info.memory_limit.map(|l| (l as f64 * fraction) as u64);
            MemorySeries {
                label: rank_label(collector, *rank),
                limit: info.memory_limit,
                spill: threshold(collector.settings.memory_spill),
                pause: threshold(collector.settings.memory_pause),
                points: thin(memory.remove(rank).unwrap_or_default(), MAX_POINTS),
            }
        })
        .collect();

    let bin_us = (end_us.saturating_sub(origin) / TRANSFER_BINS as u64).max(1000);
    let bins = (end_us.saturating_sub(origin) / bin_us + 1) as usize;
    let mut pairs: BTreeMap<(Rank, Rank), Vec<u64>> = BTreeMap::new();
    for (from, to, at, nbytes) in moves {
        let bin = (at.saturating_sub(origin) / bin_us) as usize;
        let series = pairs.entry((from, to)).or_insert_with(|| vec![0; bins]);
        series[bin.min(bins - 1)] += nbytes;
    }
    let transfers = pairs
        .into_iter()
        .map(|((from, to), bytes)| TransferSeries {
            label: format!("{} \u{2192} {}", from.0, to.0),
            bytes,
        })
        .collect();

    let progress = kinds
        .keys()
        .map(|func| {
            let mut times = finished.remove(func).unwrap_or_default();
            times.sort_unstable();
            let points: Vec<(f64, u64)> = times
                .iter()
                .enumerate()
                .map(|(i, &at)| (ms(at), i as u64 + 1))
                .collect();
            ProgressSeries {
                kind: collector.kind_name(*func).to_string(),
                points: thin(points, MAX_POINTS),
            }
        })
        .collect();

    ReportData {
        running,
        rows: labels,
        kinds: kind_names,
        tasks,
        span_ms,
        total_tasks,
        memory,
        transfer_bin_ms: bin_us as f64 / 1000.0,
        transfers,
        progress,
    }
}

/// `text` safe inside HTML element content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn summary_tables(summary: &Summary, scope: bool) -> String {
    let mut html = String::new();
    let status = match summary.exit_code {
        Some(code) => code.to_string(),
        None if scope => "(part of the program)".to_string(),
        None => "(running)".to_string(),
    };
    html.push_str(&format!(
        "<table class=\"summary\"><tr><th>exit code</th><td>{status}</td></tr>\
         <tr><th>wall time</th><td>{:.2} s</td></tr>\
         <tr><th>task runs</th><td>{}</td></tr>\
         <tr><th>failed</th><td>{}</td></tr>\
         <tr><th>transfers</th><td>{} ({})</td></tr>\
         <tr><th>spills</th><td>{} ({}), {} read back</td></tr></table>\n",
        summary.wall_seconds,
        summary.tasks,
        summary.failures,
        summary.transfers,
        human_bytes(summary.bytes_moved),
        summary.spills,
        human_bytes(summary.spilled_bytes),
        summary.read_backs
    ));
    html.push_str(
        "<table class=\"kinds\"><tr><th>task kind</th><th>runs</th><th>failed</th>\
         <th>seconds</th></tr>\n",
    );
    for kind in &summary.kinds {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td></tr>\n",
            escape(&kind.name),
            kind.tasks,
            kind.failed,
            kind.seconds
        ));
    }
    html.push_str(
        "</table>\n<table class=\"workers\"><tr><th>worker</th><th>host</th>\
                   <th>threads</th><th>tasks</th><th>busy</th></tr>\n",
    );
    for worker in &summary.workers {
        html.push_str(&format!(
            "<tr><td>rank {}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td></tr>\n",
            worker.rank,
            escape(&worker.host),
            worker.threads,
            worker.tasks,
            worker.busy_percent
        ));
    }
    html.push_str("</table>\n");
    html
}

/// The failed task runs with their messages.
fn failure_table(collector: &TraceCollector) -> String {
    if collector.failures.is_empty() {
        return "<p id=\"failures\" data-count=\"0\">No task failed.</p>\n".to_string();
    }
    let mut kinds: BTreeMap<u64, FnId> = BTreeMap::new();
    for (_, event) in &collector.events {
        if let TraceEvent::Task { key, func, .. } = event {
            kinds.insert(key.0, *func);
        }
    }
    let mut html = format!(
        "<table id=\"failures\" data-count=\"{}\"><tr><th>task</th><th>worker</th>\
         <th>at</th><th>message</th></tr>\n",
        collector.failures.len()
    );
    for failure in &collector.failures {
        let name = kinds
            .get(&failure.key.0)
            .map_or("task", |func| collector.kind_name(*func));
        html.push_str(&format!(
            "<tr><td>{}-{}</td><td>rank {}</td><td>{:.3} s</td><td><pre>{}</pre></td></tr>\n",
            escape(name),
            failure.key.0,
            failure.worker.0,
            failure.at_us.saturating_sub(collector.start_us) as f64 * 1e-6,
            escape(&failure.message)
        ));
    }
    html.push_str("</table>\n");
    if collector.more_failures > 0 {
        html.push_str(&format!(
            "<p>{} more failures are not listed.</p>\n",
            collector.more_failures
        ));
    }
    html
}

/// The page, with `@STATUS@`, `@SUMMARY@`, `@FAILURES@` and `@DATA@` to fill.
const PAGE: &str = include_str!("report.html");

/// Writes the report page to `out` (while the job runs when `summary` has no exit code).
pub(super) fn write(
    collector: &TraceCollector,
    summary: &Summary,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let running = summary.exit_code.is_none() && collector.scope.is_none();
    let data =
        serde_json::to_string(&report_data(collector, running)).map_err(std::io::Error::other)?;
    // Inside <script>, only "</" could end the element early.
    let data = data.replace("</", "<\\/");
    let status = match (&collector.scope, summary.exit_code) {
        (Some(scope), _) => scope.clone(),
        (None, Some(code)) => format!("The job ended with exit code {code}."),
        (None, None) => format!(
            "The job is running: this page is rewritten every {} s (reload to update).",
            collector.settings.interval.as_secs_f64()
        ),
    };
    let mut rest = PAGE;
    for (placeholder, text) in [
        ("@STATUS@", escape(&status)),
        (
            "@SUMMARY@",
            summary_tables(summary, collector.scope.is_some()),
        ),
        ("@FAILURES@", failure_table(collector)),
        ("@DATA@", data),
    ] {
        let (head, tail) = rest.split_once(placeholder).expect("placeholder in page");
        out.write_all(head.as_bytes())?;
        out.write_all(text.as_bytes())?;
        rest = tail;
    }
    out.write_all(rest.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }

    #[test]
    fn thinning_keeps_the_ends_and_at_most_about_max() {
        let points: Vec<u32> = (0..1000).collect();
        let kept = thin(points, 100);
        assert!(kept.len() <= 101, "{}", kept.len());
        assert_eq!((kept[0], *kept.last().unwrap()), (0, 999));
        assert_eq!(thin(vec![1, 2], 100), vec![1, 2]);
    }

    #[test]
    fn every_placeholder_is_in_the_page_once() {
        for placeholder in ["@STATUS@", "@SUMMARY@", "@FAILURES@", "@DATA@"] {
            assert_eq!(PAGE.matches(placeholder).count(), 1, "{placeholder}");
        }
    }
}
