//! The inner loop of k-means: each row's nearest centre (by `|c|^2 - 2 x . c`, ties to the
//! first centre), and for a Lloyd pass its exact squared distance and its share of the
//! cluster sums, in one read of the rows. The centres are packed [`LANES`] to a group,
//! feature by feature, and [`ROWS`] rows go through a group at once, so the products fill
//! vector registers and do not wait on one another: AVX2 with FMA where the CPU has them
//! (chosen at run time), plain code elsewhere.

/// Centres per group: two AVX2 registers of `f64`.
const LANES: usize = 8;
/// Rows that go through a group of centres together.
const ROWS: usize = 4;

/// The centres, packed for [`pass`] and [`labels`].
pub(super) struct Centres {
    d: usize,
    k: usize,
    /// Group `g`, feature `j`, lane `l` at `(g * d + j) * LANES + l`: coordinate `j` of
    /// centre `g * LANES + l` (0 past the last centre).
    coords: Vec<f64>,
    /// Group `g`, lane `l` at `g * LANES + l`: the centre's squared norm (infinite past the
    /// last centre, so that padding is never nearest).
    norms: Vec<f64>,
    /// The centres as given, row-major `k x d`.
    rows: Vec<f64>,
}

impl Centres {
    /// Packs `centres` (`k x d`).
    pub(super) fn new(centres: ndarray::ArrayView2<'_, f64>) -> Centres {
        let (k, d) = centres.dim();
        let groups = k.div_ceil(LANES);
        let mut coords = vec![0.0; groups * d * LANES];
        let mut norms = vec![f64::INFINITY; groups * LANES];
        for (c, centre) in centres.outer_iter().enumerate() {
            let (g, l) = (c / LANES, c % LANES);
            for (j, &v) in centre.iter().enumerate() {
                coords[(g * d + j) * LANES + l] = v;
            }
            norms[c] = centre.dot(&centre);
        }
        Centres {
            d,
            k,
            coords,
            norms,
            rows: centres.iter().copied().collect(),
        }
    }

    /// Centre `c` (`d` values).
    pub(super) fn centre(&self, c: usize) -> &[f64] {
        &self.rows[c * self.d..(c + 1) * self.d]
    }
}

/// Adds each of `rows` (row-major, `d` values a row; `d` at least 1) to the sums (`k x d`)
/// and count of its nearest centre and returns the sum of their exact squared distances
/// to it. A row holding NaN goes to centre 0 and makes the sum NaN.
pub(super) fn pass(rows: &[f64], centres: &Centres, sums: &mut [f64], counts: &mut [u64]) -> f64 {
    let (k, d) = (centres.k, centres.d);
    assert!(k > 0 && d > 0 && rows.len().is_multiple_of(d));
    assert!(sums.len() == k * d && counts.len() == k);
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `avx2`).
        return unsafe { x86::pass(rows, centres, sums, counts) };
    }
    plain::pass(rows, centres, sums, counts)
}

/// The nearest centre of each of `rows` (row-major, `d` values a row; `d` at least 1); a
/// row holding NaN gets centre 0.
pub(super) fn labels(rows: &[f64], centres: &Centres) -> Vec<usize> {
    let (k, d) = (centres.k, centres.d);
    assert!(k > 0 && d > 0 && rows.len().is_multiple_of(d));
    let mut out = Vec::with_capacity(rows.len() / d);
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `avx2`).
        unsafe { x86::labels(rows, centres, &mut out) };
        return out;
    }
    plain::labels(rows, centres, &mut out);
    out
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Calls `each(i, row, c)` for every row `i` of `rows` and its nearest centre `c`, by
/// `nearest` on [`ROWS`] rows at a time (the last rows padded with zeros).
#[inline(always)]
fn each_nearest(
    rows: &[f64],
    centres: &Centres,
    nearest: impl Fn(&[f64]) -> [usize; ROWS],
    mut each: impl FnMut(&[f64], usize),
) {
    let d = centres.d;
    let blocks = rows.chunks_exact(ROWS * d);
    let tail = blocks.remainder();
    for block in blocks {
        let cs = nearest(block);
        for (row, c) in block.chunks_exact(d).zip(cs) {
            each(row, c);
        }
    }
    if !tail.is_empty() {
        let mut padded = vec![0.0; ROWS * d];
        padded[..tail.len()].copy_from_slice(tail);
        let cs = nearest(&padded);
        for (row, c) in tail.chunks_exact(d).zip(cs) {
            each(row, c);
        }
    }
}

/// The kernels in plain code (any CPU).
mod plain {
    use super::{Centres, LANES, ROWS, each_nearest};

    pub(super) fn pass(
        rows: &[f64],
        centres: &Centres,
        sums: &mut [f64],
        counts: &mut [u64],
    ) -> f64 {
        let d = centres.d;
        let mut inertia = 0.0;
        each_nearest(
            rows,
            centres,
            |block| nearest(block, centres),
            |row, c| {
                counts[c] += 1;
                inertia += add_and_distance(&mut sums[c * d..(c + 1) * d], row, centres.centre(c));
            },
        );
        inertia
    }

    pub(super) fn labels(rows: &[f64], centres: &Centres, out: &mut Vec<usize>) {
        each_nearest(
            rows,
            centres,
            |block| nearest(block, centres),
            |_, c| out.push(c),
        );
    }

    /// The nearest centre of each of the [`ROWS`] rows of `block`.
    fn nearest(block: &[f64], centres: &Centres) -> [usize; ROWS] {
        let d = centres.d;
        let mut best = [(0, f64::INFINITY); ROWS];
        let groups = centres.coords.chunks_exact(d * LANES);
        for (g, (coords, norms)) in groups.zip(centres.norms.chunks_exact(LANES)).enumerate() {
            let mut dots = [[0.0f64; LANES]; ROWS];
            for (j, coord) in coords.chunks_exact(LANES).enumerate() {
                for (r, dots) in dots.iter_mut().enumerate() {
                    let x = block[r * d + j];
                    for (dot, &c) in dots.iter_mut().zip(coord) {
                        *dot += x * c;
                    }
                }
            }
            for (best, dots) in best.iter_mut().zip(&dots) {
                for (l, (&dot, &norm)) in dots.iter().zip(norms).enumerate() {
                    let distance = norm - 2.0 * dot;
                    if distance < best.1 {
                        *best = (g * LANES + l, distance);
                    }
                }
            }
        }
        best.map(|(c, _)| c)
    }

    /// Adds `row` to `sums` and returns the squared distance between `row` and `centre`.
    fn add_and_distance(sums: &mut [f64], row: &[f64], centre: &[f64]) -> f64 {
        let mut distance = 0.0;
        for ((s, &v), &m) in sums.iter_mut().zip(row).zip(centre) {
            *s += v;
            distance += (v - m) * (v - m);
        }
        distance
    }
}

/// The kernels with AVX2 and FMA: a group's 8 centres in two registers, [`ROWS`] rows'
/// products with them in eight, the nearest found by comparing each lane with the minimum.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Centres, LANES, ROWS, each_nearest};
    use std::arch::x86_64::*;

    /// [`super::pass`] (the caller checks that the CPU has AVX2 and FMA).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn pass(
        rows: &[f64],
        centres: &Centres,
        sums: &mut [f64],
        counts: &mut [u64],
    ) -> f64 {
        let d = centres.d;
        let mut inertia = 0.0;
        each_nearest(
            rows,
            centres,
            |block| nearest(block, centres),
            |row, c| {
                counts[c] += 1;
                let sums = &mut sums[c * d..(c + 1) * d];
                inertia += add_and_distance(sums, row, centres.centre(c));
            },
        );
        inertia
    }

    /// [`super::labels`] (the caller checks that the CPU has AVX2 and FMA).
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn labels(rows: &[f64], centres: &Centres, out: &mut Vec<usize>) {
        each_nearest(rows, centres, |b| nearest(b, centres), |_, c| out.push(c));
    }

    /// The nearest centre of each of the [`ROWS`] rows of `block` (`ROWS * d` values).
    #[target_feature(enable = "avx2,fma")]
    fn nearest(block: &[f64], centres: &Centres) -> [usize; ROWS] {
        let d = centres.d;
        assert!(block.len() == ROWS * d);
        let mut best = [(0, f64::INFINITY); ROWS];
        let two = _mm256_set1_pd(2.0);
        let groups = centres.coords.chunks_exact(d * LANES);
        for (g, (coords, norms)) in groups.zip(centres.norms.chunks_exact(LANES)).enumerate() {
            let mut lo = [_mm256_setzero_pd(); ROWS];
            let mut hi = [_mm256_setzero_pd(); ROWS];
            for (j, coord) in coords.chunks_exact(LANES).enumerate() {
                // SAFETY: `coord` holds LANES = 8 values.
                let (cl, ch) = unsafe {
                    (
                        _mm256_loadu_pd(coord.as_ptr()),
                        _mm256_loadu_pd(coord.as_ptr().add(4)),
                    )
                };
                for r in 0..ROWS {
                    let x = _mm256_set1_pd(block[r * d + j]);
                    lo[r] = _mm256_fmadd_pd(x, cl, lo[r]);
                    hi[r] = _mm256_fmadd_pd(x, ch, hi[r]);
                }
            }
            // SAFETY: `norms` holds LANES = 8 values.
            let (nl, nh) = unsafe {
                (
                    _mm256_loadu_pd(norms.as_ptr()),
                    _mm256_loadu_pd(norms.as_ptr().add(4)),
                )
            };
            for (r, best) in best.iter_mut().enumerate() {
                let dl = _mm256_fnmadd_pd(two, lo[r], nl);
                let dh = _mm256_fnmadd_pd(two, hi[r], nh);
                let m4 = _mm256_min_pd(dl, dh);
                let m2 = _mm_min_pd(_mm256_castpd256_pd128(m4), _mm256_extractf128_pd::<1>(m4));
                let m = _mm_cvtsd_f64(_mm_min_sd(m2, _mm_unpackhi_pd(m2, m2)));
                if m < best.1 {
                    let mv = _mm256_set1_pd(m);
                    let low = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(dl, mv)) as u32;
                    let high = _mm256_movemask_pd(_mm256_cmp_pd::<_CMP_EQ_OQ>(dh, mv)) as u32;
                    *best = (g * LANES + (low | high << 4).trailing_zeros() as usize, m);
                }
            }
        }
        best.map(|(c, _)| c)
    }

    /// Adds `row` to `sums` and returns the squared distance between `row` and `centre`.
    #[target_feature(enable = "avx2,fma")]
    fn add_and_distance(sums: &mut [f64], row: &[f64], centre: &[f64]) -> f64 {
        let d = row.len();
        assert!(sums.len() == d && centre.len() == d);
        let split = d / 4 * 4;
        let mut lanes = _mm256_setzero_pd();
        for j in (0..split).step_by(4) {
            // SAFETY: `j + 4 <= split <= d`, the length of all three slices.
            unsafe {
                let v = _mm256_loadu_pd(row.as_ptr().add(j));
                let m = _mm256_loadu_pd(centre.as_ptr().add(j));
                let s = _mm256_loadu_pd(sums.as_ptr().add(j));
                _mm256_storeu_pd(sums.as_mut_ptr().add(j), _mm256_add_pd(s, v));
                let e = _mm256_sub_pd(v, m);
                lanes = _mm256_fmadd_pd(e, e, lanes);
            }
        }
        let mut l = [0.0; 4];
        // SAFETY: `l` holds 4 values.
        unsafe { _mm256_storeu_pd(l.as_mut_ptr(), lanes) };
        let mut distance = (l[0] + l[1]) + (l[2] + l[3]);
        for j in split..d {
            sums[j] += row[j];
            distance += (row[j] - centre[j]) * (row[j] - centre[j]);
        }
        distance
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// The nearest centre of each row and the exact sums, counts and inertia, by plain
    /// distances to every centre.
    fn reference(
        rows: &Array2<f64>,
        centres: &Array2<f64>,
    ) -> (Vec<usize>, Vec<f64>, Vec<u64>, f64) {
        let (k, d) = centres.dim();
        let (mut sums, mut counts, mut inertia) = (vec![0.0; k * d], vec![0; k], 0.0);
        let mut labels = Vec::new();
        for row in rows.outer_iter() {
            let mut best = (0, f64::INFINITY);
            for (c, centre) in centres.outer_iter().enumerate() {
                let dist: f64 = (&row - &centre).mapv(|v| v * v).sum();
                if dist < best.1 {
                    best = (c, dist);
                }
            }
            labels.push(best.0);
            counts[best.0] += 1;
            for j in 0..d {
                sums[best.0 * d + j] += row[j];
            }
            inertia += best.1;
        }
        (labels, sums, counts, inertia)
    }

    fn check(n: usize, d: usize, k: usize) {
        let rows = Array2::from_shape_fn((n, d), |(i, j)| {
            ((i * 37 + j * 11) % 23) as f64 * 0.5 + ((i % 5) * (j + 1)) as f64
        });
        let centres = Array2::from_shape_fn((k, d), |(c, j)| ((c * 7 + j * 3) % 13) as f64);
        let packed = Centres::new(centres.view());
        let values = rows.as_slice().unwrap();
        let (labels_ref, sums_ref, counts_ref, inertia_ref) = reference(&rows, &centres);
        let (mut sums, mut counts) = (vec![0.0; k * d], vec![0; k]);
        let inertia = pass(values, &packed, &mut sums, &mut counts);
        assert_eq!(labels(values, &packed), labels_ref, "n {n} d {d} k {k}");
        assert_eq!(counts, counts_ref);
        for (a, b) in sums.iter().zip(&sums_ref) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0));
        }
        assert!((inertia - inertia_ref).abs() <= 1e-9 * inertia_ref);
        // The plain kernels agree too.
        let (mut sums, mut counts) = (vec![0.0; k * d], vec![0; k]);
        let inertia = plain::pass(values, &packed, &mut sums, &mut counts);
        assert_eq!(counts, counts_ref);
        assert!((inertia - inertia_ref).abs() <= 1e-9 * inertia_ref);
        let mut out = Vec::new();
        plain::labels(values, &packed, &mut out);
        assert_eq!(out, labels_ref);
    }

    #[test]
    fn the_kernels_agree_with_plain_distances() {
        // Rows not a multiple of 4, features not of 4, centres fewer and more than a group.
        for (n, d, k) in [(1, 1, 1), (7, 3, 2), (103, 20, 8), (50, 5, 9), (33, 6, 17)] {
            check(n, d, k);
        }
    }

    #[test]
    fn ties_go_to_the_first_centre_and_nan_to_centre_0() {
        let centres = ndarray::array![[1.0, 0.0], [-1.0, 0.0], [0.0, 5.0]];
        let packed = Centres::new(centres.view());
        assert_eq!(
            labels(&[0.0, 0.0, -1.0, 0.1, f64::NAN, 5.0], &packed),
            vec![0, 1, 0]
        );
        let (mut sums, mut counts) = (vec![0.0; 6], vec![0; 3]);
        assert!(pass(&[0.0, 5.0, 1.0, f64::NAN], &packed, &mut sums, &mut counts).is_nan());
        assert_eq!(counts, vec![1, 0, 1]);
    }
}
