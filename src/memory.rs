//! Memory limit of a worker: `--memory-limit` (`8GB`, `512MiB`, `0.5` of the node, `auto`,
//! `none`), and for `auto` the memory the node gives the job (cgroup limit, else Slurm's
//! `SLURM_MEM_PER_NODE` / `SLURM_MEM_PER_CPU`, else `MemTotal`) shared by the ranks on it.

use std::fmt;
use std::str::FromStr;

/// `--memory-limit`: how much memory one worker may hold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MemoryLimitSpec {
    /// The node's memory divided by the ranks on the node.
    #[default]
    Auto,
    /// No limit.
    Unlimited,
    /// A number of bytes.
    Bytes(u64),
    /// A fraction (0, 1] of the node's memory.
    Fraction(f64),
}

impl FromStr for MemoryLimitSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let hint = "write a size such as 8GB or 512MiB, a fraction of the node's memory such \
                    as 0.5, auto (the node's memory shared by its ranks) or none";
        match trimmed.to_ascii_lowercase().as_str() {
            "auto" => return Ok(MemoryLimitSpec::Auto),
            "none" | "0" => return Ok(MemoryLimitSpec::Unlimited),
            _ => {}
        }
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("'{text}' is not a memory limit: {hint}"))?;
        if !value.is_finite() || value <= 0.0 {
            return Err(format!("'{text}' must be above 0: {hint}"));
        }
        let unit = unit.trim();
        if unit.is_empty() {
            if value <= 1.0 {
                return Ok(MemoryLimitSpec::Fraction(value));
            }
            if value.fract() != 0.0 {
                return Err(format!(
                    "'{text}' is neither a fraction (at most 1) nor a whole number of bytes: {hint}"
                ));
            }
            return Ok(MemoryLimitSpec::Bytes(value as u64));
        }
        let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
            "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "tb" | "t" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(format!("'{text}' has an unknown unit '{unit}': {hint}")),
        };
        Ok(MemoryLimitSpec::Bytes((value * multiplier) as u64))
    }
}

impl fmt::Display for MemoryLimitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryLimitSpec::Auto => f.write_str("auto"),
            MemoryLimitSpec::Unlimited => f.write_str("none"),
            MemoryLimitSpec::Bytes(bytes) => write!(f, "{bytes}B"),
            MemoryLimitSpec::Fraction(fraction) => write!(f, "{fraction}"),
        }
    }
}

/// The memory this node gives the job, and where that figure comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMemory {
    /// Bytes.
    pub bytes: u64,
    /// E.g. `cgroup memory.max` or `SLURM_MEM_PER_NODE`.
    pub source: String,
}

/// Reads the node's memory for the job: the cgroup limit if there is one, else Slurm's
/// allocation, else `MemTotal`; never more than `MemTotal`.
pub fn node_memory() -> NodeMemory {
    let total = mem_total().unwrap_or(u64::MAX);
    let env = |name: &str| std::env::var(name).ok();
    let found = cgroup_limit()
        .map(|bytes| (bytes, "the cgroup memory limit".to_string()))
        .or_else(|| slurm_memory(env).map(|(bytes, source)| (bytes, source.to_string())))
        .unwrap_or((total, "MemTotal".to_string()));
    NodeMemory {
        bytes: found.0.min(total),
        source: found.1,
    }
}

/// Slurm's memory allocation for this node, from its environment.
fn slurm_memory(env: impl Fn(&str) -> Option<String>) -> Option<(u64, &'static str)> {
    const MB: u64 = 1 << 20; // Slurm counts in MiB ("MB" in its documentation)
    let number = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(mb) = number("SLURM_MEM_PER_NODE").filter(|mb| *mb > 0) {
        return Some((mb * MB, "SLURM_MEM_PER_NODE"));
    }
    let per_cpu = number("SLURM_MEM_PER_CPU").filter(|mb| *mb > 0)?;
    let cpus = number("SLURM_CPUS_ON_NODE").unwrap_or(1).max(1);
    Some((
        per_cpu * cpus * MB,
        "SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE",
    ))
}

/// The machine's physical memory (`MemTotal`), bytes.
pub(crate) fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kb: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The tightest memory limit of this process's cgroup and its ancestors (v2), or of its
/// v1 memory cgroup.
fn cgroup_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut limits = Vec::new();
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let (root, file) = match controllers {
            "" => ("/sys/fs/cgroup".to_string(), "memory.max"),
            c if c.split(',').any(|c| c == "memory") => {
                ("/sys/fs/cgroup/memory".to_string(), "memory.limit_in_bytes")
            }
            _ => continue,
        };
        let mut dir = std::path::PathBuf::from(format!("{root}{path}"));
        loop {
            if let Some(limit) = std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                // v1 writes "no limit" as a huge number.
                .filter(|v| *v < (1 << 60))
            {
                limits.push(limit);
            }
            if dir.as_os_str().len() <= root.len() || !dir.pop() {
                break;
            }
        }
    }
    limits.into_iter().min()
}

/// The limit of one worker (`None`: unlimited), and how it was reached, for `mpidask info`.
pub fn worker_limit(
    spec: MemoryLimitSpec,
    ranks_on_node: usize,
    node: &NodeMemory,
) -> (Option<u64>, String) {
    let ranks = ranks_on_node.max(1) as u64;
    match spec {
        MemoryLimitSpec::Unlimited => (None, "none (--memory-limit none)".into()),
        MemoryLimitSpec::Bytes(bytes) => (Some(bytes), "--memory-limit".into()),
        MemoryLimitSpec::Fraction(fraction) => (
            Some((node.bytes as f64 * fraction) as u64),
            format!(
                "{fraction} of {} ({})",
                human_bytes(node.bytes),
                node.source
            ),
        ),
        MemoryLimitSpec::Auto => (
            Some(node.bytes / ranks),
            format!(
                "{} ({}) / {ranks} ranks on the node",
                human_bytes(node.bytes),
                node.source
            ),
        ),
    }
}

/// `bytes` in GiB, for messages.
/// A byte count for people, in binary units: `999 B`, `1.50 KiB`, `3.91 GiB`. The one
/// formatter of sizes in logs, summaries, reports and error messages.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_like_dask() {
        let parse = |s: &str| s.parse::<MemoryLimitSpec>();
        assert_eq!(parse("8GB"), Ok(MemoryLimitSpec::Bytes(8_000_000_000)));
        assert_eq!(parse("512MiB"), Ok(MemoryLimitSpec::Bytes(512 << 20)));
        assert_eq!(parse("1.5 GiB"), Ok(MemoryLimitSpec::Bytes(3 << 29)));
        assert_eq!(parse("0.5"), Ok(MemoryLimitSpec::Fraction(0.5)));
        assert_eq!(parse("4096"), Ok(MemoryLimitSpec::Bytes(4096)));
        assert_eq!(parse("auto"), Ok(MemoryLimitSpec::Auto));
        assert_eq!(parse("none"), Ok(MemoryLimitSpec::Unlimited));
        for bad in ["lots", "8XB", "-1GB", "2.5", ""] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains("8GB or 512MiB"), "{bad}: {error}");
        }
    }

    #[test]
    fn slurm_allocation_is_read_in_mib() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            slurm_memory(env(&[("SLURM_MEM_PER_NODE", "4000")])),
            Some((4000 << 20, "SLURM_MEM_PER_NODE"))
        );
        assert_eq!(
            slurm_memory(env(&[
                ("SLURM_MEM_PER_CPU", "1000"),
                ("SLURM_CPUS_ON_NODE", "8")
            ])),
            Some((8000 << 20, "SLURM_MEM_PER_CPU x SLURM_CPUS_ON_NODE"))
        );
        assert_eq!(slurm_memory(env(&[])), None);
    }

    #[test]
    fn auto_shares_the_node_between_its_ranks() {
        let node = NodeMemory {
            bytes: 16 << 30,
            source: "MemTotal".into(),
        };
        let (limit, how) = worker_limit(MemoryLimitSpec::Auto, 4, &node);
        assert_eq!(limit, Some(4 << 30));
        assert!(how.contains("16.00 GiB (MemTotal) / 4 ranks"), "{how}");
        assert_eq!(
            worker_limit(MemoryLimitSpec::Fraction(0.25), 4, &node).0,
            Some(4 << 30)
        );
        assert_eq!(worker_limit(MemoryLimitSpec::Unlimited, 4, &node).0, None);
        assert!(node_memory().bytes > 0);
    }
}
