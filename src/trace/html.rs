//! The task stream as one self-contained HTML page (no network access needed): the summary
//! as tables, and the stream drawn as SVG by a small script from data embedded in the page:
//! a row per worker thread, a rectangle per task run, a colour per task kind.

use super::chrome::rank_label;
use super::{Summary, TraceCollector};
use crate::memory::human_bytes;
use crate::protocol::{FnId, Rank, TraceEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// At most this many task runs are drawn (the longest ones); a browser stays responsive.
pub const MAX_DRAWN_TASKS: usize = 100_000;

#[derive(Serialize)]
struct StreamData {
    rows: Vec<String>,
    kinds: Vec<String>,
    /// Per task: row, kind, start (ms), duration (ms), key, ok (1/0).
    tasks: Vec<(u32, u32, f64, f64, u64, u8)>,
    span_ms: f64,
    total_tasks: usize,
}

fn stream_data(collector: &TraceCollector) -> StreamData {
    let mut rows: BTreeMap<(Rank, u32), u32> = BTreeMap::new();
    for (rank, info) in &collector.workers {
        for thread in 0..info.nthreads {
            rows.insert((*rank, thread), 0);
        }
    }
    let mut kinds: BTreeMap<FnId, u32> = BTreeMap::new();
    let mut runs = Vec::new();
    let mut end_us = collector.start_us;
    for (rank, event) in &collector.events {
        if let TraceEvent::Task {
            key,
            func,
            thread,
            start_us,
            duration_us,
            ok,
        } = event
        {
            rows.entry((*rank, *thread)).or_insert(0);
            let next_kind = kinds.len() as u32;
            kinds.entry(*func).or_insert(next_kind);
            end_us = end_us.max(start_us + duration_us);
            runs.push((*rank, *thread, *func, *start_us, *duration_us, key.0, *ok));
        }
    }
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
    let origin = collector.start_us as f64;
    let tasks = runs
        .into_iter()
        .map(|(rank, thread, func, start, duration, key, ok)| {
            (
                rows[&(rank, thread)],
                kinds[&func],
                (start as f64 - origin) / 1000.0,
                duration as f64 / 1000.0,
                key,
                u8::from(ok),
            )
        })
        .collect();
    let mut kind_names = vec![String::new(); kinds.len()];
    for (func, index) in kinds {
        kind_names[index as usize] = collector.kind_name(func).to_string();
    }
    StreamData {
        rows: labels,
        kinds: kind_names,
        tasks,
        span_ms: end_us.saturating_sub(collector.start_us) as f64 / 1000.0,
        total_tasks,
    }
}

/// `text` safe inside HTML element content and attribute values.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn summary_tables(summary: &Summary) -> String {
    let mut html = String::new();
    html.push_str(&format!(
        "<table class=\"summary\"><tr><th>exit code</th><td>{}</td></tr>\
         <tr><th>wall time</th><td>{:.2} s</td></tr>\
         <tr><th>task runs</th><td>{}</td></tr>\
         <tr><th>failed</th><td>{}</td></tr>\
         <tr><th>transfers</th><td>{} ({})</td></tr>\
         <tr><th>spills</th><td>{} ({}), {} read back</td></tr></table>\n",
        summary.exit_code,
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

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mpidask task stream</title>
<style>
body { font: 14px sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0 2em 1em 0; display: inline-table; vertical-align: top; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
svg text { font: 11px sans-serif; }
rect.task { stroke: #fff; stroke-width: 0.5; }
rect.task.failed { stroke: #d00; stroke-width: 1.5; }
#legend span { display: inline-block; margin-right: 1em; }
#legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
</style></head>
<body>
<h1>mpidask task stream</h1>
@SUMMARY@
<p id="note"></p>
<div id="legend"></div>
<svg id="stream" xmlns="http://www.w3.org/2000/svg" width="1200" height="40"></svg>
<script id="task-data" type="application/json">@DATA@</script>
<script>
(function () {
  const data = JSON.parse(document.getElementById('task-data').textContent);
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.getElementById('stream');
  const palette = ['#4e79a7', '#f28e2b', '#59a14f', '#76b7b2', '#edc948', '#b07aa1',
                   '#ff9da7', '#9c755f', '#bab0ac', '#e15759'];
  const colour = (kind) => palette[kind % palette.length];
  const rowHeight = 18, labelWidth = 230, width = 1200, axis = 24;
  const scale = (width - labelWidth - 10) / Math.max(data.span_ms, 0.001);
  svg.setAttribute('height', data.rows.length * rowHeight + axis);
  const add = (name, attributes, parent) => {
    const element = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, v);
    (parent || svg).appendChild(element);
    return element;
  };
  data.rows.forEach((label, row) => {
    add('text', {x: 0, y: row * rowHeight + 13}).textContent = label;
  });
  let drawn = 0;
  for (const [row, kind, start, duration, key, ok] of data.tasks) {
    const rect = add('rect', {
      'class': ok ? 'task' : 'task failed',
      x: labelWidth + start * scale, y: row * rowHeight + 2,
      width: Math.max(duration * scale, 0.5), height: rowHeight - 4,
      fill: colour(kind),
    });
    add('title', {}, rect).textContent =
      data.kinds[kind] + '-' + key + ': ' + duration.toFixed(3) + ' ms' + (ok ? '' : ' (failed)');
    drawn += 1;
  }
  const ticks = 8, y = data.rows.length * rowHeight + 16;
  for (let i = 0; i <= ticks; i++) {
    const ms = data.span_ms * i / ticks;
    const anchor = i === 0 ? 'start' : i === ticks ? 'end' : 'middle';
    add('text', {x: labelWidth + ms * scale, y: y, 'text-anchor': anchor}).textContent =
      ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : ms.toFixed(1) + ' ms';
  }
  const legend = document.getElementById('legend');
  data.kinds.forEach((name, kind) => {
    const item = document.createElement('span');
    const swatch = document.createElement('i');
    swatch.style.background = colour(kind);
    item.appendChild(swatch);
    item.appendChild(document.createTextNode(name));
    legend.appendChild(item);
  });
  document.getElementById('note').textContent = drawn < data.total_tasks
    ? 'Showing the ' + drawn + ' longest of ' + data.total_tasks + ' task runs.'
    : data.total_tasks + ' task runs.';
  document.body.dataset.rendered = drawn;
})();
</script>
</body></html>
"#;

/// Writes the report page to `out`.
pub(super) fn write(
    collector: &TraceCollector,
    summary: &Summary,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let data = serde_json::to_string(&stream_data(collector)).map_err(std::io::Error::other)?;
    // Inside <script>, only "</" could end the element early.
    let data = data.replace("</", "<\\/");
    let (head, rest) = PAGE.split_once("@SUMMARY@").expect("summary placeholder");
    let (middle, tail) = rest.split_once("@DATA@").expect("data placeholder");
    out.write_all(head.as_bytes())?;
    out.write_all(summary_tables(summary).as_bytes())?;
    out.write_all(middle.as_bytes())?;
    out.write_all(data.as_bytes())?;
    out.write_all(tail.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
