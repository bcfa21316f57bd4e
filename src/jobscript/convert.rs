//! Walltimes and memory sizes read in Slurm's forms and written in each batch system's.

use super::JobscriptError;

/// Seconds in `HH:MM:SS` or `D-HH:MM:SS` (minutes and seconds below 60; hours below 24
/// when days are given).
pub fn walltime_seconds(value: &str) -> Result<u64, JobscriptError> {
    let bad = || JobscriptError::BadWalltime(value.to_string());
    let (days, clock) = match value.split_once('-') {
        Some((days, clock)) => (Some(days), clock),
        None => (None, value),
    };
    if let Some(days) = days
        && (days.is_empty() || days.len() > 4 || !days.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let number = |p: &str| p.parse::<u64>().unwrap_or(u64::MAX);
    let (hours, minutes, seconds) = (number(parts[0]), number(parts[1]), number(parts[2]));
    if minutes >= 60 || seconds >= 60 || (days.is_some() && hours >= 24) {
        return Err(bad());
    }
    let days = days.map_or(0, number);
    Ok(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
}

/// `HH:MM:SS` with as many hours as needed (PBS `walltime`, SGE `h_rt`): `1-02:00:00` is
/// `26:00:00`.
pub fn hours_minutes_seconds(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// LSF's `-W` form `H:MM`, rounded up to the whole minute so the limit is never shorter
/// than asked.
pub fn lsf_hours_minutes(seconds: u64) -> String {
    let minutes = seconds.div_ceil(60);
    format!("{}:{:02}", minutes / 60, minutes % 60)
}

/// KiB in a Slurm size: a whole number with an optional unit K, M, G or T (either case,
/// powers of 1024); no unit means M, as in Slurm.
pub fn size_kib(flag: &'static str, value: &str) -> Result<u64, JobscriptError> {
    let bad = || JobscriptError::BadSize {
        flag,
        value: value.to_string(),
    };
    let digits = value.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
    let unit = &value[digits.len()..];
    if digits.is_empty() || unit.len() > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let shift = match unit.to_ascii_uppercase().as_str() {
        "K" => 0,
        "" | "M" => 10,
        "G" => 20,
        _ => 30,
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(bad)
}

/// The largest of `units` (lowest first, each 1024 times the one before, the first being
/// KiB) that writes `kib` as a whole number.
fn exact(kib: u64, units: [&str; 4]) -> String {
    let mut value = kib;
    let mut unit = 0;
    while unit + 1 < units.len() && value > 0 && value.is_multiple_of(1024) {
        value /= 1024;
        unit += 1;
    }
    format!("{value}{}", units[unit])
}

/// PBS size units, lower case, powers of 1024: `64gb`, `512mb`, `100kb`.
pub fn pbs_size(kib: u64) -> String {
    exact(kib, ["kb", "mb", "gb", "tb"])
}

/// Grid Engine's memory units, upper case (powers of 1024; lower case would be powers of
/// 1000): `4G`, `512M`, `100K`.
pub fn sge_size(kib: u64) -> String {
    exact(kib, ["K", "M", "G", "T"])
}

/// Whole MiB, rounded up (LSF's limits with `LSF_UNIT_FOR_LIMITS=MB`, HTCondor's
/// `request_memory`).
pub fn mib_rounded_up(kib: u64) -> u64 {
    kib.div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walltimes_become_seconds_and_each_systems_form() {
        for (given, seconds, hms, lsf) in [
            ("00:10:00", 600, "00:10:00", "0:10"),
            ("1:00:00", 3600, "01:00:00", "1:00"),
            ("01:30:30", 5430, "01:30:30", "1:31"),
            ("2-00:00:00", 172_800, "48:00:00", "48:00"),
            ("1-02:03:04", 93_784, "26:03:04", "26:04"),
            ("10-23:59:59", 950_399, "263:59:59", "264:00"),
            ("00:00:00", 0, "00:00:00", "0:00"),
        ] {
            assert_eq!(walltime_seconds(given), Ok(seconds), "{given}");
            assert_eq!(hours_minutes_seconds(seconds), hms, "{given}");
            assert_eq!(lsf_hours_minutes(seconds), lsf, "{given}");
        }
    }

    #[test]
    fn malformed_walltimes_are_named() {
        for bad in [
            "90:00",
            "01:75:00",
            "1-30:00:00",
            "1:2:3:4",
            "-01:00:00",
            "1h",
            "",
            "01:00:0x",
            "01:00:60",
            "123:00:00",
        ] {
            assert_eq!(
                walltime_seconds(bad),
                Err(JobscriptError::BadWalltime(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sizes_become_kib_and_each_systems_units() {
        for (given, kib, pbs, sge, mib) in [
            ("64G", 64 << 20, "64gb", "64G", 65_536),
            ("512M", 512 << 10, "512mb", "512M", 512),
            ("100", 100 << 10, "100mb", "100M", 100),
            ("1T", 1 << 30, "1tb", "1T", 1 << 20),
            ("64k", 64, "64kb", "64K", 1),
            ("1536M", 1536 << 10, "1536mb", "1536M", 1536),
            ("2048M", 2 << 20, "2gb", "2G", 2048),
            ("0", 0, "0kb", "0K", 0),
        ] {
            assert_eq!(size_kib("mem", given), Ok(kib), "{given}");
            assert_eq!(pbs_size(kib), pbs, "{given}");
            assert_eq!(sge_size(kib), sge, "{given}");
            assert_eq!(mib_rounded_up(kib), mib, "{given}");
        }
    }

    #[test]
    fn malformed_sizes_are_named() {
        for bad in [
            "8GB",
            "lots",
            "G",
            "",
            "1.5G",
            "-1G",
            "99999999999999999999T",
        ] {
            assert_eq!(
                size_kib("mem", bad),
                Err(JobscriptError::BadSize {
                    flag: "mem",
                    value: bad.into()
                }),
                "{bad:?}"
            );
        }
    }
}
