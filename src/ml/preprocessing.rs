//! Scaling, encoding and splitting of samples-by-features arrays, as
//! `dask_ml.preprocessing` and `dask_ml.model_selection.train_test_split`: `fit` computes
//! its statistics in one tree reduction over the row chunks, where they lie; `transform` is
//! a lazy array expression. The fitted attributes are scikit-learn's (`mean_`, `var_`,
//! `scale_`, `data_min_`, ...).

use super::rows::{as_f64, error, row_chunked, same_features, tree};
use crate::Client;
use crate::array::{self, Array, DType, Element};
use crate::collections::array::from_delayed_chunks;
use crate::delayed::{Delayed, try_delayed};
use crate::error::Result;
use ndarray::{Array1, Array2, ArrayD, Axis, Ix2};
use rand_xoshiro::Xoshiro256PlusPlus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

/// Column statistics of some rows: merged by Chan et al.'s formulas.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ColumnStats {
    pub(super) rows: u64,
    pub(super) mean: Vec<f64>,
    /// The sum of squared deviations from `mean`, per column.
    pub(super) m2: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    /// The first NaN met: (row within these rows, column).
    nan: Option<(u64, usize)>,
}

/// The statistics of one row chunk.
fn chunk_stats(block: ArrayD<f64>) -> std::result::Result<ColumnStats, String> {
    let block = block
        .into_dimensionality::<Ix2>()
        .map_err(|e| format!("column statistics of a block that is not 2-D: {e}"))?;
    let (rows, cols) = block.dim();
    let mut nan = None;
    let (mut min, mut max) = (vec![f64::INFINITY; cols], vec![f64::NEG_INFINITY; cols]);
    let mut mean = vec![0.0; cols];
    for (r, row) in block.outer_iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            if v.is_nan() && nan.is_none() {
                nan = Some((r as u64, c));
            }
            mean[c] += v;
            min[c] = min[c].min(v);
            max[c] = max[c].max(v);
        }
    }
    let n = rows.max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    let mut m2 = vec![0.0; cols];
    for row in block.outer_iter() {
        for (c, &v) in row.iter().enumerate() {
            let d = v - mean[c];
            m2[c] += d * d;
        }
    }
    Ok(ColumnStats {
        rows: rows as u64,
        mean,
        m2,
        min,
        max,
        nan,
    })
}

/// The statistics of the union of `parts`' rows (in order: a NaN's row counts from the
/// first).
fn merge_stats(parts: Vec<ColumnStats>) -> ColumnStats {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("a combine task has parts");
    for p in parts {
        if acc.nan.is_none() {
            acc.nan = p.nan.map(|(r, c)| (acc.rows + r, c));
        }
        let (na, nb) = (acc.rows as f64, p.rows as f64);
        let n = na + nb;
        if p.rows > 0 {
            for c in 0..acc.mean.len() {
                let delta = p.mean[c] - acc.mean[c];
                acc.mean[c] += delta * nb / n;
                acc.m2[c] += p.m2[c] + delta * delta * na * nb / n;
                acc.min[c] = acc.min[c].min(p.min[c]);
                acc.max[c] = acc.max[c].max(p.max[c]);
            }
        }
        acc.rows += p.rows;
    }
    acc
}

/// The column statistics of `x` (2-D), computed; an error names the first NaN.
pub(super) fn column_stats(client: &Client, x: &Array, who: &str) -> Result<ColumnStats> {
    let x = as_f64(&row_chunked(x, who)?);
    if x.shape()[0] == 0 {
        return Err(error(format!("{who}: the array has no rows")));
    }
    let parts: Vec<Delayed<ColumnStats>> = x
        .to_delayed::<f64>()
        .iter()
        .map(|b| try_delayed(chunk_stats, b))
        .collect();
    let stats = tree(parts, merge_stats)
        .expect("an array with rows has a chunk")
        .compute(client)?;
    if let Some((row, column)) = stats.nan {
        return Err(error(format!(
            "{who}: the input holds NaN (first at row {row}, column {column}); drop or fill \
             the missing values first"
        )));
    }
    Ok(stats)
}

/// A 1-D row of `values` that broadcasts against the rows of a 2-D array.
pub(super) fn row_of(values: &Array1<f64>) -> Array {
    array::from_array(&values.clone().into_dyn(), &[values.len().max(1)])
}

/// Scales each feature to zero mean and unit variance (`sklearn`'s and dask-ml's
/// `StandardScaler`): `(x - mean_) / scale_`, the variance the population's (`ddof = 0`), a
/// feature of variance 0 left unscaled (`scale_` 1).
///
/// ```
/// use mpidask::array;
/// use mpidask::ml::preprocessing::StandardScaler;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let x = array::arange(0.0, 8.0, 1.0, 8).reshape(&[4, 2]).rechunk(&[2, 2]);
///     let mut scaler = StandardScaler::new();
///     scaler.fit(client, &x).unwrap();
///     assert_eq!(scaler.mean().unwrap().to_vec(), vec![3.0, 4.0]);
///     let z = scaler.transform(&x).unwrap().mean_axis(0).compute::<f64>(client).unwrap();
///     assert!(z.iter().all(|v| v.abs() < 1e-12));
/// });
/// ```
#[derive(Debug, Clone)]
pub struct StandardScaler {
    /// Subtract the mean (scikit-learn's `with_mean`).
    pub with_mean: bool,
    /// Divide by the standard deviation (`with_std`).
    pub with_std: bool,
    fitted: Option<Standard>,
}

#[derive(Debug, Clone)]
struct Standard {
    mean: Array1<f64>,
    var: Array1<f64>,
    scale: Array1<f64>,
    rows: usize,
}

impl Default for StandardScaler {
    fn default() -> Self {
        Self::new()
    }
}

impl StandardScaler {
    /// A scaler that centres and scales.
    pub fn new() -> Self {
        StandardScaler {
            with_mean: true,
            with_std: true,
            fitted: None,
        }
    }

    /// Computes each feature's mean and variance over the rows of `x` (2-D), in one tree
    /// reduction. NaN is an error (scikit-learn skips NaN; drop or fill them first).
    pub fn fit(&mut self, client: &Client, x: &Array) -> Result<&mut Self> {
        let stats = column_stats(client, x, "StandardScaler.fit")?;
        let n = stats.rows as f64;
        let var = Array1::from_iter(stats.m2.iter().map(|m| m / n));
        let scale = var.mapv(|v| if v == 0.0 { 1.0 } else { v.sqrt() });
        self.fitted = Some(Standard {
            mean: Array1::from(stats.mean),
            var,
            scale,
            rows: stats.rows as usize,
        });
        Ok(self)
    }

    fn fitted(&self, who: &str) -> Result<&Standard> {
        self.fitted
            .as_ref()
            .ok_or_else(|| error(format!("StandardScaler.{who} before fit: call fit first")))
    }

    /// `(x - mean_) / scale_`, lazily, as `f64`.
    pub fn transform(&self, x: &Array) -> Result<Array> {
        let f = self.fitted("transform")?;
        same_features(x, f.mean.len(), "StandardScaler.transform")?;
        let mut y = as_f64(x);
        if self.with_mean {
            y = &y - &row_of(&f.mean);
        }
        if self.with_std {
            y = &y / &row_of(&f.scale);
        }
        Ok(y)
    }

    /// [`fit`](Self::fit), then [`transform`](Self::transform).
    pub fn fit_transform(&mut self, client: &Client, x: &Array) -> Result<Array> {
        self.fit(client, x)?;
        self.transform(x)
    }

    /// `x * scale_ + mean_`: what [`transform`](Self::transform) undoes.
    pub fn inverse_transform(&self, x: &Array) -> Result<Array> {
        let f = self.fitted("inverse_transform")?;
        same_features(x, f.mean.len(), "StandardScaler.inverse_transform")?;
        let mut y = as_f64(x);
        if self.with_std {
            y = &y * &row_of(&f.scale);
        }
        if self.with_mean {
            y = &y + &row_of(&f.mean);
        }
        Ok(y)
    }

    /// Each feature's mean (`mean_`), once fitted.
    pub fn mean(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.mean)
    }

    /// Each feature's variance (`var_`), once fitted.
    pub fn var(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.var)
    }

    /// Each feature's divisor (`scale_`: the standard deviation, 1 where it is 0).
    pub fn scale(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.scale)
    }

    /// The rows seen by `fit` (`n_samples_seen_`).
    pub fn n_samples_seen(&self) -> Option<usize> {
        self.fitted.as_ref().map(|f| f.rows)
    }
}

/// Scales each feature into `feature_range` (scikit-learn's `MinMaxScaler`):
/// `x * scale_ + min_` with `scale_ = (hi - lo) / (data_max_ - data_min_)` (1 where a
/// feature is constant) and `min_ = lo - data_min_ * scale_`.
#[derive(Debug, Clone)]
pub struct MinMaxScaler {
    /// The range the fitted data is mapped into (`feature_range`, default `(0, 1)`).
    pub feature_range: (f64, f64),
    fitted: Option<MinMax>,
}

#[derive(Debug, Clone)]
struct MinMax {
    data_min: Array1<f64>,
    data_max: Array1<f64>,
    scale: Array1<f64>,
    min: Array1<f64>,
}

impl Default for MinMaxScaler {
    fn default() -> Self {
        Self::new((0.0, 1.0))
    }
}

impl MinMaxScaler {
    /// A scaler into `feature_range` (`(lo, hi)` with `lo < hi`).
    pub fn new(feature_range: (f64, f64)) -> Self {
        MinMaxScaler {
            feature_range,
            fitted: None,
        }
    }

    /// Computes each feature's minimum and maximum over the rows of `x`.
    pub fn fit(&mut self, client: &Client, x: &Array) -> Result<&mut Self> {
        let (lo, hi) = self.feature_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(error(format!(
                "MinMaxScaler: feature_range ({lo}, {hi}) must have its minimum below its \
                 maximum"
            )));
        }
        let stats = column_stats(client, x, "MinMaxScaler.fit")?;
        let data_min = Array1::from(stats.min);
        let data_max = Array1::from(stats.max);
        let range = &data_max - &data_min;
        let scale = range.mapv(|r| (hi - lo) / if r == 0.0 { 1.0 } else { r });
        let min = data_min.mapv(|_| lo) - &data_min * &scale;
        self.fitted = Some(MinMax {
            data_min,
            data_max,
            scale,
            min,
        });
        Ok(self)
    }

    fn fitted(&self, who: &str) -> Result<&MinMax> {
        self.fitted
            .as_ref()
            .ok_or_else(|| error(format!("MinMaxScaler.{who} before fit: call fit first")))
    }

    /// `x * scale_ + min_`, lazily, as `f64`.
    pub fn transform(&self, x: &Array) -> Result<Array> {
        let f = self.fitted("transform")?;
        same_features(x, f.scale.len(), "MinMaxScaler.transform")?;
        Ok(&(&as_f64(x) * &row_of(&f.scale)) + &row_of(&f.min))
    }

    /// [`fit`](Self::fit), then [`transform`](Self::transform).
    pub fn fit_transform(&mut self, client: &Client, x: &Array) -> Result<Array> {
        self.fit(client, x)?;
        self.transform(x)
    }

    /// `(x - min_) / scale_`: what [`transform`](Self::transform) undoes.
    pub fn inverse_transform(&self, x: &Array) -> Result<Array> {
        let f = self.fitted("inverse_transform")?;
        same_features(x, f.scale.len(), "MinMaxScaler.inverse_transform")?;
        Ok(&(&as_f64(x) - &row_of(&f.min)) / &row_of(&f.scale))
    }

    /// Each feature's minimum in the fitted data (`data_min_`).
    pub fn data_min(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.data_min)
    }

    /// Each feature's maximum in the fitted data (`data_max_`).
    pub fn data_max(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.data_max)
    }

    /// Each feature's factor (`scale_`).
    pub fn scale(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.scale)
    }

    /// Each feature's offset (`min_`).
    pub fn min(&self) -> Option<&Array1<f64>> {
        self.fitted.as_ref().map(|f| &f.min)
    }
}

/// The sorted distinct values of each column of a block.
fn chunk_categories(block: ArrayD<i64>) -> std::result::Result<Vec<Vec<i64>>, String> {
    let block = block
        .into_dimensionality::<Ix2>()
        .map_err(|e| format!("categories of a block that is not 2-D: {e}"))?;
    Ok(block
        .axis_iter(Axis(1))
        .map(|column| {
            let mut values: Vec<i64> = column.to_vec();
            values.sort_unstable();
            values.dedup();
            values
        })
        .collect())
}

fn merge_categories(parts: Vec<Vec<Vec<i64>>>) -> Vec<Vec<i64>> {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().expect("a combine task has parts");
    for p in parts {
        for (a, b) in acc.iter_mut().zip(p) {
            a.extend(b);
            a.sort_unstable();
            a.dedup();
        }
    }
    acc
}

/// The one-hot columns of a block: for each column, one output column per category.
fn one_hot_block(
    block: ArrayD<i64>,
    categories: Vec<Vec<i64>>,
) -> std::result::Result<ArrayD<f64>, String> {
    let block = block
        .into_dimensionality::<Ix2>()
        .map_err(|e| format!("one-hot encoding of a block that is not 2-D: {e}"))?;
    let width: usize = categories.iter().map(Vec::len).sum();
    let mut out = Array2::<f64>::zeros((block.nrows(), width));
    let mut offset = 0;
    for (c, cats) in categories.iter().enumerate() {
        for (r, &v) in block.column(c).iter().enumerate() {
            let Ok(k) = cats.binary_search(&v) else {
                return Err(format!(
                    "OneHotEncoder.transform: value {v} in column {c} was not seen by fit \
                     (its categories are {cats:?})"
                ));
            };
            out[[r, offset + k]] = 1.0;
        }
        offset += cats.len();
    }
    Ok(out.into_dyn())
}

/// One column of 0/1 per category of each integer feature (scikit-learn's `OneHotEncoder`
/// with `sparse_output=False` and `handle_unknown='error'`): the categories are each
/// column's distinct values, sorted, found by `fit` in one tree reduction; `transform`
/// gives `f64` columns, the categories of the first feature first.
#[derive(Debug, Clone, Default)]
pub struct OneHotEncoder {
    categories: Option<Vec<Vec<i64>>>,
}

impl OneHotEncoder {
    /// An encoder to fit.
    pub fn new() -> Self {
        OneHotEncoder::default()
    }

    /// Finds each column's categories in `x` (a 2-D array of integers or booleans).
    pub fn fit(&mut self, client: &Client, x: &Array) -> Result<&mut Self> {
        let x = integers(&row_chunked(x, "OneHotEncoder.fit")?, "OneHotEncoder.fit")?;
        if x.shape()[0] == 0 {
            return Err(error("OneHotEncoder.fit: the array has no rows"));
        }
        let parts = x
            .to_delayed::<i64>()
            .iter()
            .map(|b| try_delayed(chunk_categories, b))
            .collect();
        let categories = tree(parts, merge_categories)
            .expect("an array with rows has a chunk")
            .compute(client)?;
        self.categories = Some(categories);
        Ok(self)
    }

    /// The one-hot columns of `x`, lazily; a value `fit` did not see fails the
    /// computation with an error naming it and its column.
    pub fn transform(&self, x: &Array) -> Result<Array> {
        let categories = self
            .categories
            .as_ref()
            .ok_or_else(|| error("OneHotEncoder.transform before fit: call fit first"))?;
        same_features(x, categories.len(), "OneHotEncoder.transform")?;
        let x = integers(&row_chunked(x, "OneHotEncoder.transform")?, "OneHotEncoder")?;
        let width = categories.iter().map(Vec::len).sum();
        let parts: Vec<Delayed<ArrayD<f64>>> = x
            .to_delayed::<i64>()
            .iter()
            .map(|b| try_delayed(one_hot_block, (b, categories.clone())))
            .collect();
        Ok(from_delayed_chunks(
            &parts,
            vec![x.chunks()[0].clone(), vec![width]],
        ))
    }

    /// [`fit`](Self::fit), then [`transform`](Self::transform).
    pub fn fit_transform(&mut self, client: &Client, x: &Array) -> Result<Array> {
        self.fit(client, x)?;
        self.transform(x)
    }

    /// Each feature's categories (`categories_`), once fitted.
    pub fn categories(&self) -> Option<&[Vec<i64>]> {
        self.categories.as_deref()
    }
}

/// `x` as `i64`, if it holds integers or booleans.
fn integers(x: &Array, who: &str) -> Result<Array> {
    match x.dtype() {
        DType::I64 => Ok(x.clone()),
        DType::I32 | DType::U8 | DType::Bool => Ok(x.astype(DType::I64)),
        d => Err(error(format!(
            "{who} encodes integer columns; this array holds {d} (cast categories to \
             integers first, e.g. `x.astype(DType::I64)`)"
        ))),
    }
}

/// The rows of one chunk, shuffled by the chunk's own generator and cut: the first
/// `test` rows are the test rows. The same for every array of a split.
fn shuffled_rows(rows: usize, test_size: f64, seed: u64, chunk: u64) -> (Vec<usize>, usize) {
    let key = seed ^ chunk.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(key);
    let mut order: Vec<usize> = (0..rows).collect();
    rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
    (order, test_rows(rows, test_size))
}

/// The test rows of a chunk of `rows`: `ceil(test_size * rows)`, as scikit-learn rounds.
fn test_rows(rows: usize, test_size: f64) -> usize {
    ((test_size * rows as f64).ceil() as usize).min(rows)
}

/// The train (`test == false`) or test rows of one chunk.
fn split_block<T: Element>(
    block: ArrayD<T>,
    spec: (f64, u64, u64, bool),
) -> std::result::Result<ArrayD<T>, String> {
    let (test_size, seed, chunk, test) = spec;
    let rows = block.shape().first().copied().unwrap_or(0);
    let (order, n_test) = shuffled_rows(rows, test_size, seed, chunk);
    let picked = if test {
        &order[..n_test]
    } else {
        &order[n_test..]
    };
    Ok(block.select(Axis(0), picked))
}

/// One array's train and test parts.
fn split_one<T: Element>(x: &Array, test_size: f64, seed: u64) -> (Array, Array) {
    let rows = &x.chunks()[0];
    let rest: Vec<Vec<usize>> = x.chunks()[1..]
        .iter()
        .map(|c| vec![c.iter().sum()])
        .collect();
    let whole = {
        let mut c = vec![rows.clone()];
        c.extend(rest.clone());
        x.rechunk_to(c)
    };
    let blocks = whole.to_delayed::<T>();
    let part = |test: bool| {
        let parts: Vec<Delayed<ArrayD<T>>> = blocks
            .iter()
            .enumerate()
            .map(|(k, b)| try_delayed(split_block::<T>, (b, (test_size, seed, k as u64, test))))
            .collect();
        let sizes = rows
            .iter()
            .map(|&n| {
                let t = test_rows(n, test_size);
                if test { t } else { n - t }
            })
            .collect();
        let mut chunks = vec![sizes];
        chunks.extend(rest.clone());
        from_delayed_chunks(&parts, chunks)
    };
    (part(false), part(true))
}

/// Splits the rows of `arrays` (all with the same number of rows; their rows are cut as the
/// first array's) into train and test parts, as dask-ml's `train_test_split` with
/// `shuffle=True, blockwise=True`: within each row chunk, the rows are shuffled by a
/// generator keyed by `seed` and the chunk's index (the same at any rank count), and the
/// first `ceil(test_size * rows)` are the test rows. Returns `(train, test)` per array, in
/// order; nothing is computed.
pub fn train_test_split(
    arrays: &[&Array],
    test_size: f64,
    seed: u64,
) -> Result<Vec<(Array, Array)>> {
    let Some(first) = arrays.first() else {
        return Err(error("train_test_split needs at least one array"));
    };
    if test_size.is_nan() || test_size <= 0.0 || test_size >= 1.0 {
        return Err(error(format!(
            "train_test_split: test_size {test_size} must lie strictly between 0 and 1"
        )));
    }
    for a in arrays {
        a.check()?;
        if a.ndim() == 0 || a.shape()[0] != first.shape()[0] {
            return Err(error(format!(
                "train_test_split: arrays of shapes {:?} and {:?} do not have the same \
                 number of rows",
                first.shape(),
                a.shape()
            )));
        }
    }
    let rows = first.chunks()[0].clone();
    Ok(arrays
        .iter()
        .map(|a| {
            let mut chunks = a.chunks().clone();
            chunks[0] = rows.clone();
            let a = a.rechunk_to(chunks);
            match a.dtype() {
                DType::Bool => split_one::<bool>(&a, test_size, seed),
                DType::U8 => split_one::<u8>(&a, test_size, seed),
                DType::I32 => split_one::<i32>(&a, test_size, seed),
                DType::I64 => split_one::<i64>(&a, test_size, seed),
                DType::F32 => split_one::<f32>(&a, test_size, seed),
                DType::F64 => split_one::<f64>(&a, test_size, seed),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_statistics_are_those_of_all_rows() {
        let a = Array2::from_shape_fn((7, 3), |(r, c)| ((r * 5 + c * 3) % 11) as f64 - 4.0);
        let whole = chunk_stats(a.clone().into_dyn()).unwrap();
        let parts: Vec<ColumnStats> = [0..2, 2..3, 3..7]
            .into_iter()
            .map(|r| chunk_stats(a.slice(ndarray::s![r, ..]).to_owned().into_dyn()).unwrap())
            .collect();
        let merged = merge_stats(parts);
        assert_eq!(merged.rows, 7);
        for c in 0..3 {
            assert!((merged.mean[c] - whole.mean[c]).abs() < 1e-12);
            assert!((merged.m2[c] - whole.m2[c]).abs() < 1e-9);
            assert_eq!((merged.min[c], merged.max[c]), (whole.min[c], whole.max[c]));
        }
    }

    #[test]
    fn a_nan_is_found_with_its_row() {
        let mut a = Array2::<f64>::zeros((4, 2));
        a[[3, 1]] = f64::NAN;
        let parts = vec![
            chunk_stats(a.slice(ndarray::s![0..2, ..]).to_owned().into_dyn()).unwrap(),
            chunk_stats(a.slice(ndarray::s![2..4, ..]).to_owned().into_dyn()).unwrap(),
        ];
        assert_eq!(merge_stats(parts).nan, Some((3, 1)));
    }

    #[test]
    fn split_rows_partition_each_chunk() {
        let (order, test) = shuffled_rows(10, 0.25, 3, 1);
        assert_eq!(test, 3);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(shuffled_rows(10, 0.25, 3, 1).0, order);
        assert_ne!(shuffled_rows(10, 0.25, 3, 2).0, order);
    }

    #[test]
    fn unknown_categories_are_named() {
        let block = ndarray::array![[1i64, 5], [2, 7]].into_dyn();
        let err = one_hot_block(block, vec![vec![1, 2], vec![5]]).unwrap_err();
        assert!(err.contains("value 7 in column 1"), "{err}");
    }
}
