//! K-means over a row-chunked array, as `dask_ml.cluster.KMeans`: `k-means||`
//! initialisation (Bahmani et al.: a few rounds, each sampling points in proportion to
//! their squared distance from the centres so far, where the chunks lie; the candidates,
//! weighted by the points nearest them, are reduced to `k` on the client by k-means++ and
//! weighted Lloyd), then Lloyd iterations, each one task per chunk computing the chunk's
//! per-cluster sums, counts and inertia, merged by a tree reduction. The input is persisted
//! first, so every pass reads chunks already on the workers.

use super::lloyd;
use super::rows::{as_f64, error, row_chunked, same_features, tree};
use crate::Client;
use crate::array::Array;
use crate::collections::array::{delayed_on_rows, from_delayed_chunks};
use crate::delayed::Delayed;
use crate::error::Result;
use ndarray::{Array1, Array2, ArrayD, ArrayView1, ArrayView2, Axis, Ix2};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How the first centres are chosen.
#[derive(Debug, Clone)]
pub enum Init {
    /// Bahmani et al.'s `k-means||` (dask-ml's default).
    KMeansParallel,
    /// These centres (`n_clusters` rows of the features' width), as scikit-learn's
    /// `init=array`.
    Centers(Array2<f64>),
}

/// K-means clustering (`dask_ml.cluster.KMeans`).
///
/// ```
/// use mpidask::array;
/// use mpidask::ml::cluster::KMeans;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     // Two groups of points, around 0 and around 10.
///     let v = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[40, 2]), |i| {
///         (i[0] % 2) as f64 * 10.0 + (i[0] % 5) as f64 * 0.1
///     });
///     let x = array::from_array(&v, &[15, 2]);
///     let mut model = KMeans::new(2);
///     model.fit(client, &x).unwrap();
///     let mut centres: Vec<f64> = model.cluster_centers().unwrap().column(0).to_vec();
///     centres.sort_by(f64::total_cmp);
///     assert!((centres[0] - 0.2).abs() < 1e-9 && (centres[1] - 10.2).abs() < 1e-9);
/// });
/// ```
#[derive(Debug, Clone)]
pub struct KMeans {
    /// The number of clusters, `k`.
    pub n_clusters: usize,
    /// The first centres.
    pub init: Init,
    /// At most this many Lloyd iterations (scikit-learn's 300).
    pub max_iter: usize,
    /// Converged when the centres moved, in sum of squares, by at most `tol` times the
    /// mean variance of the features (scikit-learn's rule; 1e-4).
    pub tol: f64,
    /// `k-means||`: points sampled per round, as a multiple of `k` (dask-ml's 2).
    pub oversampling_factor: f64,
    /// `k-means||`: rounds (`None`: the logarithm of the first cost, as dask-ml).
    pub init_max_iter: Option<usize>,
    /// The seed of every random choice (the same result at any rank count).
    pub seed: u64,
    fitted: Option<Fitted>,
}

#[derive(Debug, Clone)]
struct Fitted {
    centers: Array2<f64>,
    inertia: f64,
    n_iter: usize,
}

/// One chunk's (or several chunks') part of a Lloyd step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Partial {
    /// Per cluster, the sum of its points (row-major `k x d`).
    sums: Vec<f64>,
    counts: Vec<u64>,
    inertia: f64,
    /// The first NaN met: (row within these rows, column).
    nan: Option<(u64, usize)>,
    rows: u64,
    /// If asked for: per feature, the sum of squares of the rows less a fixed shift (for
    /// the features' variances, which scale the tolerance); else empty.
    squares: Vec<f64>,
}

/// The nearest centre of `row` and its squared distance.
fn nearest(row: ArrayView1<'_, f64>, centers: ArrayView2<'_, f64>) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, centre) in centers.outer_iter().enumerate() {
        let d: f64 = row
            .iter()
            .zip(centre.iter())
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        if d < best.1 {
            best = (c, d);
        }
    }
    best
}

fn first_nan(block: &ArrayView2<'_, f64>) -> Option<(u64, usize)> {
    block
        .indexed_iter()
        .find(|(_, v)| v.is_nan())
        .map(|((r, c), _)| (r as u64, c))
}

/// Rows per block of [`lloyd_rows`]: a block stays in the L2 cache while its squares are
/// summed after its pass.
const LLOYD_BLOCK_ROWS: usize = 512;

/// The rows of `rows` as one slice, copied only when they are not in standard layout.
fn row_major<'a>(rows: &'a ArrayView2<'_, f64>) -> std::borrow::Cow<'a, [f64]> {
    match rows.as_slice() {
        Some(values) => values.into(),
        None => rows.iter().copied().collect::<Vec<f64>>().into(),
    }
}

/// One Lloyd step's sums, counts and inertia over `rows` (the inertia from each row's exact
/// distance to its centre), in one read of the rows ([`lloyd::pass`]). NaN anywhere in a
/// row makes its distance NaN, so the search for the first NaN runs only when the inertia
/// is NaN. With `shift`, it also sums each feature's squares less the shift.
fn lloyd_rows(
    rows: ArrayView2<'_, f64>,
    centers: ArrayView2<'_, f64>,
    shift: Option<&[f64]>,
) -> Partial {
    let (k, d) = centers.dim();
    let mut partial = Partial {
        sums: vec![0.0; k * d],
        counts: vec![0; k],
        inertia: 0.0,
        nan: None,
        rows: rows.nrows() as u64,
        squares: vec![0.0; shift.map_or(0, |_| d)],
    };
    if d == 0 {
        // Every row is at distance 0 of every centre: the first takes them all.
        partial.counts[0] = partial.rows;
        return partial;
    }
    let centres = lloyd::Centres::new(centers);
    let values = row_major(&rows);
    for block in values.chunks(LLOYD_BLOCK_ROWS * d) {
        partial.inertia += lloyd::pass(block, &centres, &mut partial.sums, &mut partial.counts);
        if let Some(shift) = shift {
            for row in block.chunks_exact(d) {
                for ((square, &v), &s) in partial.squares.iter_mut().zip(row).zip(shift) {
                    *square += (v - s) * (v - s);
                }
            }
        }
    }
    if partial.inertia.is_nan() {
        partial.nan = first_nan(&rows);
    }
    partial
}

/// [`lloyd_rows`] of a chunk's rows (a task of [`delayed_on_rows`]).
fn lloyd_chunk(
    rows: ArrayView2<'_, f64>,
    (centers, shift): (Array2<f64>, Option<Vec<f64>>),
) -> std::result::Result<Partial, String> {
    if shift.as_ref().is_some_and(|s| s.len() != centers.ncols()) {
        return Err("k-means: a shift of another width than the centres".into());
    }
    Ok(lloyd_rows(rows, centers.view(), shift.as_deref()))
}

/// The mean of the features' variances, from a pass that summed the squares less `shift`:
/// per feature, `E[(x - s)^2] - E[x - s]^2`.
fn mean_variance(partial: &Partial, shift: &[f64]) -> f64 {
    let (n, d) = (partial.rows as f64, shift.len());
    let total: f64 = (0..d)
        .map(|j| {
            let sum: f64 = partial.sums.iter().skip(j).step_by(d).sum();
            let mean = sum / n - shift[j];
            partial.squares[j] / n - mean * mean
        })
        .sum();
    total / d as f64
}

fn merge_partials(parts: Vec<Partial>) -> Partial {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("a combine task has parts");
    for p in parts {
        if acc.nan.is_none() {
            acc.nan = p.nan.map(|(r, c)| (acc.rows + r, c));
        }
        acc.sums.iter_mut().zip(&p.sums).for_each(|(a, b)| *a += b);
        acc.counts
            .iter_mut()
            .zip(&p.counts)
            .for_each(|(a, b)| *a += b);
        acc.inertia += p.inertia;
        acc.rows += p.rows;
        acc.squares
            .iter_mut()
            .zip(&p.squares)
            .for_each(|(a, b)| *a += b);
    }
    acc
}

/// The label of each row of a chunk (its nearest centre).
fn predict_chunk(
    rows: ArrayView2<'_, f64>,
    centers: Array2<f64>,
) -> std::result::Result<ArrayD<i64>, String> {
    if centers.ncols() != rows.ncols() {
        return Err("KMeans.predict: centres of another width than the rows".into());
    }
    let labels = match rows.ncols() {
        0 => vec![0; rows.nrows()],
        _ => lloyd::labels(&row_major(&rows), &lloyd::Centres::new(centers.view())),
    };
    Ok(Array1::from_iter(labels.into_iter().map(|c| c as i64)).into_dyn())
}

/// `k-means||`: the rows of a chunk sampled with probability `l d^2 / cost`.
fn sample_chunk(
    block: ArrayView2<'_, f64>,
    (centers, (l, cost, key)): (Array2<f64>, (f64, f64, u64)),
) -> std::result::Result<Vec<Vec<f64>>, String> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(key);
    let mut picked = Vec::new();
    let labels = match block.ncols() {
        0 => vec![0; block.nrows()],
        _ => lloyd::labels(&row_major(&block), &lloyd::Centres::new(centers.view())),
    };
    for (row, c) in block.outer_iter().zip(labels) {
        let d: f64 = row
            .iter()
            .zip(centers.row(c))
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if u < l * d / cost {
            picked.push(row.to_vec());
        }
    }
    Ok(picked)
}

fn concat_samples(parts: Vec<Vec<Vec<f64>>>) -> Vec<Vec<f64>> {
    parts.into_iter().flatten().collect()
}

/// A key for chunk `chunk` of round `round` of a seeded choice.
fn key(seed: u64, round: u64, chunk: u64) -> u64 {
    let mut h = seed ^ round.wrapping_mul(0xD1B5_4A32_D192_ED03);
    h ^= chunk.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

impl KMeans {
    /// `k` clusters, `k-means||` first, scikit-learn's defaults otherwise.
    pub fn new(n_clusters: usize) -> Self {
        KMeans {
            n_clusters,
            init: Init::KMeansParallel,
            max_iter: 300,
            tol: 1e-4,
            oversampling_factor: 2.0,
            init_max_iter: None,
            seed: 0,
            fitted: None,
        }
    }

    /// One Lloyd pass over `x` (persisted) with `centers`: the merged partial.
    fn pass(
        &self,
        client: &Client,
        blocks: &[Delayed<ArrayD<f64>>],
        centers: &Array2<f64>,
    ) -> Result<Partial> {
        self.pass_with(client, blocks, centers, None)
    }

    /// [`pass`](Self::pass), also summing the features' squares less `shift`.
    fn pass_with(
        &self,
        client: &Client,
        blocks: &[Delayed<ArrayD<f64>>],
        centers: &Array2<f64>,
        shift: Option<Vec<f64>>,
    ) -> Result<Partial> {
        let parts: Vec<Delayed<Partial>> = blocks
            .iter()
            .map(|b| delayed_on_rows(lloyd_chunk, b, (centers.clone(), shift.clone())))
            .collect();
        tree(parts, merge_partials)
            .expect("an array with rows has a chunk")
            .compute(client)
    }

    /// Fits the centres to the rows of `x` (2-D, rows are samples). NaN is an error naming
    /// its row and column; so is `n_clusters` of 0 or more than the rows.
    pub fn fit(&mut self, client: &Client, x: &Array) -> Result<&mut Self> {
        let x = as_f64(&row_chunked(x, "KMeans.fit")?);
        let (n, d) = (x.shape()[0], x.shape()[1]);
        let k = self.n_clusters;
        if k == 0 || k > n {
            return Err(error(format!(
                "KMeans.fit: n_clusters {k} must be at least 1 and at most the {n} rows"
            )));
        }
        if let Init::Centers(c) = &self.init
            && c.dim() != (k, d)
        {
            return Err(error(format!(
                "KMeans.fit: the initial centres have shape {:?}; {k} clusters of {d} \
                 features need ({k}, {d})",
                c.dim()
            )));
        }
        let x = x.persist(client)?;
        let blocks = x.to_delayed::<f64>();
        let mut centers = match &self.init {
            Init::Centers(c) => c.clone(),
            Init::KMeansParallel => self.kmeans_parallel(client, &x, &blocks)?,
        };
        // The mean variance of the features scales the tolerance (as scikit-learn); the
        // first pass sums the squares for it, less the first centre (against cancellation).
        let mut tol = None;
        let mut n_iter = 0;
        while n_iter < self.max_iter {
            let shift = tol.is_none().then(|| centers.row(0).to_vec());
            let partial = self.pass_with(client, &blocks, &centers, shift.clone())?;
            if let Some((row, column)) = partial.nan {
                return Err(error(format!(
                    "KMeans.fit: the input holds NaN (first at row {row}, column {column}); \
                     drop or fill the missing values first"
                )));
            }
            if let Some(shift) = shift {
                tol = Some(self.tol * mean_variance(&partial, &shift));
            }
            n_iter += 1;
            let mut next = centers.clone();
            for c in 0..k {
                // An empty cluster keeps its centre.
                if partial.counts[c] > 0 {
                    let count = partial.counts[c] as f64;
                    for j in 0..d {
                        next[[c, j]] = partial.sums[c * d + j] / count;
                    }
                }
            }
            let moved: f64 = (&next - &centers).mapv(|v| v * v).sum();
            centers = next;
            if tol.is_some_and(|tol| moved <= tol) {
                break;
            }
        }
        // The inertia of the final centres (one more pass, as scikit-learn's last E-step).
        let final_pass = self.pass(client, &blocks, &centers)?;
        self.fitted = Some(Fitted {
            centers,
            inertia: final_pass.inertia,
            n_iter,
        });
        Ok(self)
    }

    /// Bahmani et al.'s initialisation over the persisted `x`.
    fn kmeans_parallel(
        &self,
        client: &Client,
        x: &Array,
        blocks: &[Delayed<ArrayD<f64>>],
    ) -> Result<Array2<f64>> {
        let (n, d) = (x.shape()[0], x.shape()[1]);
        let k = self.n_clusters;
        // The first centre: a row drawn from the seed.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(key(self.seed, u64::MAX, 0));
        let first = (rng.next_u64() % n as u64) as isize;
        let row = x
            .slice(&[(first..first + 1).into()])
            .compute::<f64>(client)?
            .into_dimensionality::<Ix2>()
            .map_err(|e| error(format!("KMeans: a row that is not 2-D: {e}")))?;
        let mut candidates: Vec<Vec<f64>> = vec![row.row(0).to_vec()];
        let as_matrix = |rows: &[Vec<f64>]| {
            Array2::from_shape_vec((rows.len(), d), rows.concat()).expect("rows of d values")
        };
        let cost = self.pass(client, blocks, &as_matrix(&candidates))?;
        if let Some((row, column)) = cost.nan {
            return Err(error(format!(
                "KMeans.fit: the input holds NaN (first at row {row}, column {column}); drop \
                 or fill the missing values first"
            )));
        }
        let rounds = self
            .init_max_iter
            .unwrap_or_else(|| cost.inertia.max(1.0).ln().round().max(1.0) as usize);
        let l = self.oversampling_factor * k as f64;
        let mut cost = cost.inertia;
        for round in 0..rounds {
            if cost <= 0.0 {
                break;
            }
            let centers = as_matrix(&candidates);
            let parts: Vec<Delayed<Vec<Vec<f64>>>> = blocks
                .iter()
                .enumerate()
                .map(|(c, b)| {
                    let spec = (l, cost, key(self.seed, round as u64, c as u64));
                    delayed_on_rows(sample_chunk, b, (centers.clone(), spec))
                })
                .collect();
            let picked = tree(parts, concat_samples)
                .expect("an array with rows has a chunk")
                .compute(client)?;
            candidates.extend(picked);
            cost = self.pass(client, blocks, &as_matrix(&candidates))?.inertia;
        }
        // Each candidate weighted by the points nearest it, then reduced to k.
        let candidates = as_matrix(&candidates);
        let weights: Vec<f64> = self
            .pass(client, blocks, &candidates)?
            .counts
            .iter()
            .map(|&c| c as f64)
            .collect();
        Ok(weighted_kmeans(&candidates, &weights, k, self.seed))
    }

    fn fitted(&self, who: &str) -> Result<&Fitted> {
        self.fitted
            .as_ref()
            .ok_or_else(|| error(format!("KMeans.{who} before fit: call fit first")))
    }

    /// The nearest centre of each row of `x`, lazily (an `i64` array of `x`'s rows).
    pub fn predict(&self, x: &Array) -> Result<Array> {
        let f = self.fitted("predict")?;
        same_features(x, f.centers.ncols(), "KMeans.predict")?;
        let x = as_f64(&row_chunked(x, "KMeans.predict")?);
        let centers = f.centers.clone();
        let parts: Vec<Delayed<ArrayD<i64>>> = x
            .to_delayed::<f64>()
            .iter()
            .map(|b| delayed_on_rows(predict_chunk, b, centers.clone()))
            .collect();
        Ok(from_delayed_chunks(&parts, vec![x.chunks()[0].clone()]))
    }

    /// The centres (`cluster_centers_`, `k x d`), once fitted.
    pub fn cluster_centers(&self) -> Option<&Array2<f64>> {
        self.fitted.as_ref().map(|f| &f.centers)
    }

    /// The sum of squared distances of the rows to their nearest centre (`inertia_`).
    pub fn inertia(&self) -> Option<f64> {
        self.fitted.as_ref().map(|f| f.inertia)
    }

    /// The Lloyd iterations run (`n_iter_`).
    pub fn n_iter(&self) -> Option<usize> {
        self.fitted.as_ref().map(|f| f.n_iter)
    }
}

/// `k` centres of weighted points: k-means++ seeding, then weighted Lloyd to convergence
/// (on the client: the candidates of `k-means||` are few).
fn weighted_kmeans(points: &Array2<f64>, weights: &[f64], k: usize, seed: u64) -> Array2<f64> {
    let (m, d) = points.dim();
    if m <= k {
        // Too few candidates (duplicate rows): repeat them.
        return Array2::from_shape_fn((k, d), |(c, j)| points[[c % m, j]]);
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(key(seed, u64::MAX - 1, 0));
    let mut uniform = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let total: f64 = weights.iter().sum();
    let pick = |target: f64, w: &[f64]| {
        let mut acc = 0.0;
        for (i, &wi) in w.iter().enumerate() {
            acc += wi;
            if acc > target {
                return i;
            }
        }
        w.len() - 1
    };
    let mut chosen = vec![pick(uniform() * total, weights)];
    let mut dist: Vec<f64> = points
        .outer_iter()
        .map(|p| nearest(p, points.select(Axis(0), &chosen).view()).1)
        .collect();
    while chosen.len() < k {
        let w: Vec<f64> = dist.iter().zip(weights).map(|(d, w)| d * w).collect();
        let sum: f64 = w.iter().sum();
        let next = if sum > 0.0 {
            pick(uniform() * sum, &w)
        } else {
            (0..m).find(|i| !chosen.contains(i)).unwrap_or(0)
        };
        chosen.push(next);
        let centre = points.row(next);
        for (i, p) in points.outer_iter().enumerate() {
            let dd: f64 = p.iter().zip(centre).map(|(a, b)| (a - b) * (a - b)).sum();
            dist[i] = dist[i].min(dd);
        }
    }
    let mut centers = points.select(Axis(0), &chosen);
    for _ in 0..300 {
        let mut sums = Array2::<f64>::zeros((k, d));
        let mut counts = vec![0.0; k];
        for (p, &w) in points.outer_iter().zip(weights) {
            let (c, _) = nearest(p, centers.view());
            counts[c] += w;
            sums.row_mut(c).scaled_add(w, &p);
        }
        let mut next = centers.clone();
        for (c, &count) in counts.iter().enumerate() {
            if count > 0.0 {
                next.row_mut(c).assign(&(&sums.row(c) / count));
            }
        }
        let shift: f64 = (&next - &centers).mapv(|v| v * v).sum();
        centers = next;
        if shift == 0.0 {
            break;
        }
    }
    centers
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn a_lloyd_partial_sums_its_clusters() {
        let block = array![[0.0, 0.0], [1.0, 0.0], [10.0, 10.0]];
        let centers = array![[0.0, 0.0], [9.0, 9.0]];
        let p = lloyd_rows(block.view(), centers.view(), None);
        assert_eq!(p.counts, vec![2, 1]);
        assert_eq!(p.sums, vec![1.0, 0.0, 10.0, 10.0]);
        assert!((p.inertia - 3.0).abs() < 1e-12);
        let merged = merge_partials(vec![p.clone(), p]);
        assert_eq!(merged.counts, vec![4, 2]);
    }

    #[test]
    fn a_pass_gives_the_variances_and_finds_the_first_nan() {
        // More rows than a block, of 5 features (a tail after the lanes of 4).
        let rows = Array2::from_shape_fn((1500, 5), |(i, j)| ((i * 7 + j * 3) % 11) as f64 + 1e6);
        let centers = rows.slice(ndarray::s![..3, ..]).to_owned();
        let shift = centers.row(0).to_vec();
        let p = lloyd_rows(rows.view(), centers.view(), Some(&shift));
        let expected = rows.var_axis(Axis(0), 0.0).mean().unwrap();
        assert!((mean_variance(&p, &shift) - expected).abs() < 1e-9 * expected);
        assert_eq!(p.counts.iter().sum::<u64>(), 1500);
        let exact: f64 = rows
            .outer_iter()
            .map(|r| {
                centers
                    .outer_iter()
                    .map(|c| (&r - &c).mapv(|v| v * v).sum())
                    .fold(f64::INFINITY, f64::min)
            })
            .sum();
        assert!((p.inertia - exact).abs() <= 1e-9 * exact);
        assert_eq!(p.nan, None);
        let mut with_nan = rows.clone();
        with_nan[[900, 4]] = f64::NAN;
        with_nan[[1200, 1]] = f64::NAN;
        let p = lloyd_rows(with_nan.view(), centers.view(), None);
        assert_eq!(p.nan, Some((900, 4)));
    }

    #[test]
    fn weighted_kmeans_finds_separated_groups() {
        let points = array![[0.0], [0.2], [10.0], [10.4], [20.0]];
        let centers = weighted_kmeans(&points, &[1.0, 1.0, 1.0, 1.0, 5.0], 3, 1);
        let mut c: Vec<f64> = centers.column(0).to_vec();
        c.sort_by(f64::total_cmp);
        assert_eq!(c, vec![0.1, 10.2, 20.0]);
    }
}
