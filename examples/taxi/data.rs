//! The synthetic taxi trips and the zone table, shared by `examples/taxi` and the
//! dataframe benchmark (`benches/dataframes.rs`): every value comes from a counter-based
//! hash of its row, so the table is the same at any rank count and in any partitioning.
//! It names Polars directly (not through `mpidask::dataframe::polars`) so that
//! `examples/taxi_polars.rs`, the benchmark's Polars baseline, does not link mpidask.

use polars::prelude::df;

type Frame = polars::prelude::DataFrame;

/// A 64-bit mix of `x` (splitmix64's finaliser).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A uniform value in [0, 1) for `row` and `field`.
fn uniform(row: u64, field: u64) -> f64 {
    (mix(row.wrapping_mul(16).wrapping_add(field)) >> 11) as f64 / (1u64 << 53) as f64
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Trips `start..end` of the synthetic table.
pub fn trips((start, end): (u64, u64)) -> Frame {
    let n = (end - start) as usize;
    let (mut pickup, mut passengers, mut distance, mut fare) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut tip, mut payment, mut from, mut to) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    const JANUARY_2025_MS: i64 = 1_735_689_600_000;
    for row in start..end {
        let u = |field| uniform(row, field);
        pickup.push(JANUARY_2025_MS + (u(0) * 31.0 * 86_400_000.0) as i64);
        let p = u(1);
        passengers.push(match p {
            p if p < 0.70 => 1i32,
            p if p < 0.85 => 2,
            p if p < 0.90 => 3,
            p if p < 0.93 => 4,
            p if p < 0.97 => 5,
            _ => 6,
        });
        let miles = cents(-(1.0 - u(2)).ln() * 3.0);
        distance.push(miles);
        let amount = cents(3.0 + 2.5 * miles + 5.0 * u(3));
        fare.push(amount);
        let kind = match u(4) {
            k if k < 0.70 => 1i32, // card
            k if k < 0.95 => 2,    // cash
            k if k < 0.98 => 3,    // no charge
            _ => 4,                // dispute
        };
        payment.push(kind);
        tip.push(if kind == 1 {
            cents(amount * (0.10 + 0.15 * u(5)))
        } else {
            0.0
        });
        // Busy zones have small ids.
        from.push(1 + (265.0 * u(6) * u(6)) as i32);
        to.push(1 + (265.0 * u(7)) as i32);
    }
    df!(
        "pickup_ms" => pickup,
        "passenger_count" => passengers,
        "trip_distance" => distance,
        "fare_amount" => fare,
        "tip_amount" => tip,
        "payment_type" => payment,
        "PULocationID" => from,
        "DOLocationID" => to
    )
    .expect("the trips' columns have one length")
}

/// The zone lookup table: 265 zones in six boroughs.
pub fn zones() -> Frame {
    const BOROUGHS: [&str; 6] = [
        "Manhattan",
        "Brooklyn",
        "Queens",
        "Bronx",
        "Staten Island",
        "EWR",
    ];
    let ids: Vec<i32> = (1..=265).collect();
    let boroughs: Vec<&str> = ids
        .iter()
        .map(|i| BOROUGHS[(*i as usize * 7) % 6])
        .collect();
    let names: Vec<String> = ids.iter().map(|i| format!("Zone {i}")).collect();
    df!("LocationID" => ids, "Borough" => boroughs, "Zone" => names).expect("the zones")
}
