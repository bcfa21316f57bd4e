//! The monthly climatology of a temperature field and the spread of its anomalies by
//! latitude, with labelled datasets, as an xarray user writes it:
//!
//! ```python
//! ds = xr.open_dataset("climate-t.nc", chunks={})
//! by_month = ds.t.groupby("time.month")
//! clim = by_month.mean()
//! spread = (by_month - clim).std(["time", "lon"])
//! xr.Dataset({"clim": clim, "spread": spread}).to_zarr("climate.zarr")
//! ```
//!
//! ```text
//! mpirun -np 4 target/release/examples/climate                 # writes a 3 GB file first
//! mpirun -np 4 target/release/examples/climate --years 2 --lat 19 --lon 36 --check
//! mpirun -np 4 target/release/examples/climate --input era5.nc --variable t2m --check
//! ```
//!
//! Without `--input` it first writes a synthetic netCDF file of monthly float32
//! temperatures on (time, lat, lon) (`--years 60 --lat 721 --lon 1440` by default: 3.0
//! GB). The month of each time comes from the time coordinate's CF units (`days since
//! 2000-01-01`, `hours since ...`, `months since ...`; standard calendar). Prints
//! `RESULT bytes=<input> months=<n> seconds=<value>` and the spread of a few latitudes;
//! with `--check` it also computes both results directly on a few latitudes with plain
//! loops and exits non-zero if they differ.

use anyhow::{Context, bail, ensure};
use clap::Parser;
use mpidask::array::{self, BinaryOp, DType, ReduceOp, random};
use mpidask::dataset::{Coord, DataArray, Dataset};
use ndarray::{Array1, ArrayD, Axis};
use std::path::PathBuf;
use std::time::Instant;

/// Monthly climatology and anomaly spread of a (time, lat, lon) temperature field.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// A netCDF file to read instead of writing a synthetic one
    #[arg(long)]
    input: Option<PathBuf>,

    /// The temperature variable, with dimensions (time, lat, lon)
    #[arg(long, default_value = "t")]
    variable: String,

    /// Years of monthly values in the synthetic file
    #[arg(long, default_value_t = 60)]
    years: usize,

    /// Latitudes in the synthetic file (90 to -90)
    #[arg(long, default_value_t = 721)]
    lat: usize,

    /// Longitudes in the synthetic file
    #[arg(long, default_value_t = 1440)]
    lon: usize,

    /// Where the synthetic file is written
    #[arg(long, default_value = "climate-t.nc")]
    file: PathBuf,

    /// The Zarr store the climatology and the spread are written to (replaced)
    #[arg(long, default_value = "climate.zarr")]
    output: PathBuf,

    /// Also compute both directly on a few latitudes and compare
    #[arg(long)]
    check: bool,

    /// Print the task graphs of the climatology and the spread before computing them
    #[arg(long)]
    explain: bool,

    #[command(flatten)]
    runtime: mpidask::RuntimeArgs,
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The month (1 to 12) of a day counted from 1970-01-01 (`civil_from_days`).
fn month_of_day(z: i64) -> i64 {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    if mp < 10 { mp + 3 } else { mp - 9 }
}

/// The month of every time, from the coordinate's CF `units`.
fn months(time: &Coord) -> anyhow::Result<Vec<i64>> {
    let units = time
        .attrs
        .get("units")
        .and_then(|u| u.as_str())
        .context("the time coordinate has no `units` (CF: `days since 2000-01-01`)")?;
    if let Some(calendar) = time.attrs.get("calendar").and_then(|c| c.as_str())
        && !["standard", "gregorian", "proleptic_gregorian"].contains(&calendar)
    {
        bail!("calendar `{calendar}`: only the standard calendar is known here");
    }
    let (unit, since) = units
        .split_once(" since ")
        .with_context(|| format!("time units `{units}`: expected `<unit> since <date>`"))?;
    let date: Vec<i64> = since
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .take(3)
        .map(|p| p.parse().unwrap_or(1))
        .collect();
    let (y, m, d) = match date.as_slice() {
        [y, m, d] => (*y, *m, *d),
        [y, m] => (*y, *m, 1),
        _ => bail!("time units `{units}`: cannot read the date"),
    };
    let epoch = days_from_civil(y, m, d);
    let per_day = match unit.trim() {
        "days" | "day" => 1.0,
        "hours" | "hour" => 24.0,
        "minutes" | "minute" => 1440.0,
        "seconds" | "second" => 86_400.0,
        "months" | "month" => {
            return Ok(time
                .values
                .to_f64()
                .iter()
                .map(|&v| (m - 1 + v.floor() as i64).rem_euclid(12) + 1)
                .collect());
        }
        other => bail!("time units `{units}`: unit `{other}` is not known here"),
    };
    Ok(time
        .values
        .to_f64()
        .iter()
        .map(|&v| month_of_day(epoch + (v / per_day).floor() as i64))
        .collect())
}

/// Writes the synthetic field: a mean falling from the equator to the poles, a seasonal
/// cycle of opposite sign in each hemisphere, and normal noise of 2 K.
fn generate(client: &mpidask::Client, cli: &Cli) -> anyhow::Result<()> {
    let (nt, ny, nx) = (cli.years * 12, cli.lat, cli.lon);
    let lat: Vec<f64> = (0..ny)
        .map(|j| 90.0 - 180.0 * j as f64 / (ny.max(2) - 1) as f64)
        .collect();
    let lon: Vec<f64> = (0..nx).map(|i| 360.0 * i as f64 / nx as f64).collect();
    // Mid-month days since 2000-01-01.
    let start = days_from_civil(2000, 1, 1);
    let time: Vec<i64> = (0..nt as i64)
        .map(|k| days_from_civil(2000 + k / 12, k % 12 + 1, 15) - start)
        .collect();
    let s: Vec<f64> = lat.iter().map(|l| l.to_radians().sin()).collect();
    let mean = Array1::from_iter(s.iter().map(|s| 288.0 - 30.0 * s * s));
    let amplitude = Array1::from_iter(s.iter().map(|s| -12.0 * s));
    let season =
        Array1::from_iter((0..nt).map(|k| (std::f64::consts::TAU * (k % 12) as f64 / 12.0).cos()));
    let rows = ((64usize << 20) / (ny * nx * 8).max(1)).clamp(1, nt);
    let lat_axis = |v: Array1<f64>| {
        array::from_array(
            &v.into_shape_with_order((1, ny, 1)).unwrap().into_dyn(),
            &[1, ny, 1],
        )
    };
    let season = array::from_array(
        &season.into_shape_with_order((nt, 1, 1)).unwrap().into_dyn(),
        &[rows, 1, 1],
    );
    let noise = random::normal(0.0, 2.0, &[nt, ny, nx], &[rows, ny, nx], 2026);
    let t = (&(&noise + &lat_axis(mean)) + &(&season * &lat_axis(amplitude))).astype(DType::F32);
    let t = DataArray::new(&cli.variable, t, &["time", "lat", "lon"])?
        .with_attr("units", "K")
        .with_attr("long_name", "air temperature")
        .with_coord_attrs(
            "time",
            Coord {
                values: time.into(),
                attrs: [("units".to_string(), "days since 2000-01-01".into())].into(),
            },
        )?
        .with_coord_attrs(
            "lat",
            Coord {
                values: lat.into(),
                attrs: [("units".to_string(), "degrees_north".into())].into(),
            },
        )?
        .with_coord_attrs(
            "lon",
            Coord {
                values: lon.into(),
                attrs: [("units".to_string(), "degrees_east".into())].into(),
            },
        )?;
    t.into_dataset()?
        .with_attr(
            "title",
            "synthetic monthly temperatures (mpidask climate example)",
        )
        .to_netcdf(client, &cli.file)?;
    Ok(())
}

/// The climatology and spread at latitude `j`, computed directly from its values.
fn direct(values: &ArrayD<f32>, months: &[i64]) -> (Vec<Vec<f64>>, f64) {
    let (nt, nx) = (values.shape()[0], values.shape()[1]);
    let mut sums = vec![vec![0.0f64; nx]; 12];
    let mut counts = vec![vec![0usize; nx]; 12];
    for t in 0..nt {
        for i in 0..nx {
            let v = f64::from(values[[t, i]]);
            if !v.is_nan() {
                sums[(months[t] - 1) as usize][i] += v;
                counts[(months[t] - 1) as usize][i] += 1;
            }
        }
    }
    let clim: Vec<Vec<f64>> = (0..12)
        .map(|m| (0..nx).map(|i| sums[m][i] / counts[m][i] as f64).collect())
        .collect();
    let anomalies: Vec<f64> = (0..nt)
        .flat_map(|t| (0..nx).map(move |i| (t, i)))
        .map(|(t, i)| f64::from(values[[t, i]]) - clim[(months[t] - 1) as usize][i])
        .filter(|a| !a.is_nan())
        .collect();
    let n = anomalies.len() as f64;
    let mean = anomalies.iter().sum::<f64>() / n;
    let var = anomalies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / n;
    (clim, var.sqrt())
}

fn main() {
    let cli: Cli = mpidask::parse_args();
    mpidask::run_with(cli.runtime.clone(), |client| -> anyhow::Result<()> {
        let path = match &cli.input {
            Some(path) => path.clone(),
            None => {
                let started = Instant::now();
                generate(client, &cli)?;
                println!(
                    "wrote {} in {:.1} s",
                    cli.file.display(),
                    started.elapsed().as_secs_f64()
                );
                cli.file.clone()
            }
        };
        let bytes = std::fs::metadata(&path)
            .with_context(|| path.display().to_string())?
            .len();
        let started = Instant::now();
        let ds = Dataset::open_netcdf(&path)?;
        let t = ds.get(&cli.variable)?;
        ensure!(
            t.dims() == ["time", "lat", "lon"],
            "{}: `{}` has dimensions {:?}; this example takes (time, lat, lon)",
            path.display(),
            cli.variable,
            t.dims()
        );
        let time = t.coord("time").context("no time coordinate")?;
        let months = months(time).with_context(|| path.display().to_string())?;
        let by_month = t.groupby("time", "month", &months)?;
        let clim = by_month
            .mean()?
            .with_attr("long_name", "monthly climatology");
        let spread = by_month
            .binary(BinaryOp::Sub, &clim)?
            .reduce(ReduceOp::Std(0), &["time", "lon"])?
            .rename("spread")
            .with_attr("long_name", "standard deviation of the monthly anomalies");
        if cli.explain {
            println!("climatology:\n{}", clim.data().explain());
            println!("spread:\n{}", spread.data().explain());
        }
        let result = Dataset::new()
            .with(clim.rename("clim"))?
            .with(spread)?
            .with_attr("source", path.display().to_string());
        let overwrite = array::ZarrOptions::default().overwrite(true);
        result.to_zarr_with(client, &cli.output, &overwrite)?;
        let seconds = started.elapsed().as_secs_f64();
        let written = Dataset::open_zarr(&cli.output)?;
        let spread: ArrayD<f32> = written.get("spread")?.compute(client)?;
        let lat = &written.coord("lat").context("no lat in the result")?.values;
        let step = (lat.len() / 6).max(1);
        for j in (0..lat.len()).step_by(step) {
            println!("lat {:>7.2}  spread {:.3}", lat.get(j), spread[[j]]);
        }
        println!(
            "RESULT bytes={bytes} months={} seconds={seconds:.6}",
            by_month.keys().len()
        );
        if cli.check {
            let clim_all: ArrayD<f32> = written.get("clim")?.compute(client)?;
            let n = lat.len();
            for j in [0, n / 2, n - 1] {
                let values: ArrayD<f32> = t.isel("lat", j)?.compute(client)?;
                let (want_clim, want_spread) = direct(&values, &months);
                let got = clim_all.index_axis(Axis(1), j);
                for (position, month) in by_month.keys().into_iter().enumerate() {
                    for (i, &w) in want_clim[(month - 1) as usize].iter().enumerate() {
                        let g = f64::from(got[[position, i]]);
                        ensure!(
                            (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                            "CHECK failed: clim month {month} lat {j} lon {i}: {g} where a \
                             direct computation gives {w}"
                        );
                    }
                }
                let g = f64::from(spread[[j]]);
                ensure!(
                    (g - want_spread).abs() <= 1e-4 * want_spread.max(1.0),
                    "CHECK failed: spread at lat {j}: {g} where a direct computation gives \
                     {want_spread}"
                );
            }
            println!("CHECK ok: the climatology and spread of 3 latitudes as computed directly");
        }
        Ok(())
    });
}
