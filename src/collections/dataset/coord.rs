//! Coordinates: the labels along one dimension, held by the client, and the positions that
//! a label or a range of labels selects (xarray's `sel`).

use crate::array::{self, Array, Attrs, DType, Span};
use std::ops::RangeInclusive;

/// The labels of a coordinate, in their element type.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// `float64` labels.
    F64(Vec<f64>),
    /// `float32` labels.
    F32(Vec<f32>),
    /// `int64` labels (integers of other widths are read as these).
    I64(Vec<i64>),
}

impl From<Vec<f64>> for Values {
    fn from(v: Vec<f64>) -> Values {
        Values::F64(v)
    }
}
impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Values {
        Values::F32(v)
    }
}
impl From<Vec<i64>> for Values {
    fn from(v: Vec<i64>) -> Values {
        Values::I64(v)
    }
}

impl Values {
    /// How many labels.
    pub fn len(&self) -> usize {
        match self {
            Values::F64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    /// `true` if there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Values::F64(_) => DType::F64,
            Values::F32(_) => DType::F32,
            Values::I64(_) => DType::I64,
        }
    }

    /// Label `i` as a number.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            Values::F64(v) => v[i],
            Values::F32(v) => v[i].into(),
            Values::I64(v) => v[i] as f64,
        }
    }

    /// The labels as numbers.
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Labels `start, start + step, ...`, `len` of them.
    pub(crate) fn select(&self, start: usize, step: usize, len: usize) -> Values {
        fn pick<T: Copy>(v: &[T], start: usize, step: usize, len: usize) -> Vec<T> {
            v.iter()
                .skip(start)
                .step_by(step)
                .take(len)
                .copied()
                .collect()
        }
        match self {
            Values::F64(v) => Values::F64(pick(v, start, step, len)),
            Values::F32(v) => Values::F32(pick(v, start, step, len)),
            Values::I64(v) => Values::I64(pick(v, start, step, len)),
        }
    }

    /// The labels as a 1-D array of one chunk.
    pub(crate) fn to_array(&self) -> Array {
        let chunk = [self.len().max(1)];
        match self {
            Values::F64(v) => array::from_array(&ndarray::arr1(v).into_dyn(), &chunk),
            Values::F32(v) => array::from_array(&ndarray::arr1(v).into_dyn(), &chunk),
            Values::I64(v) => array::from_array(&ndarray::arr1(v).into_dyn(), &chunk),
        }
    }

    /// Labels equal to `fill` made NaN (integers become `float64`), then scaled by
    /// `scale` and shifted by `offset`: CF's packed and missing values decoded.
    pub(crate) fn decode(
        self,
        fill: Option<f64>,
        scale: Option<f64>,
        offset: Option<f64>,
    ) -> Values {
        if fill.is_none() && scale.is_none() && offset.is_none() {
            return self;
        }
        let apply = |x: f64| {
            if fill.is_some_and(|f| x == f || (f.is_nan() && x.is_nan())) {
                f64::NAN
            } else {
                x * scale.unwrap_or(1.0) + offset.unwrap_or(0.0)
            }
        };
        match self {
            Values::F32(v) => Values::F32(v.into_iter().map(|x| apply(x.into()) as f32).collect()),
            other => Values::F64(other.to_f64().into_iter().map(apply).collect()),
        }
    }
}

/// A coordinate: the labels along one dimension and their attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Coord {
    /// The labels, one per position along the dimension.
    pub values: Values,
    /// Their attributes (`units`, `long_name`, ...).
    pub attrs: Attrs,
}

impl Coord {
    /// Labels without attributes.
    pub fn new(values: impl Into<Values>) -> Coord {
        Coord {
            values: values.into(),
            attrs: Attrs::new(),
        }
    }
}

/// Positions along one dimension (xarray's `isel`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Isel {
    /// One position: the dimension is dropped.
    At(usize),
    /// `start:stop:step` (Python's slice; the dimension is kept).
    Span(Span),
}

impl From<usize> for Isel {
    fn from(i: usize) -> Isel {
        Isel::At(i)
    }
}
impl From<Span> for Isel {
    fn from(s: Span) -> Isel {
        Isel::Span(s)
    }
}
impl From<std::ops::Range<usize>> for Isel {
    fn from(r: std::ops::Range<usize>) -> Isel {
        Isel::Span(Span::new(Some(r.start as isize), Some(r.end as isize), 1))
    }
}
impl From<std::ops::RangeFrom<usize>> for Isel {
    fn from(r: std::ops::RangeFrom<usize>) -> Isel {
        Isel::Span(Span::new(Some(r.start as isize), None, 1))
    }
}
impl From<std::ops::RangeTo<usize>> for Isel {
    fn from(r: std::ops::RangeTo<usize>) -> Isel {
        Isel::Span(Span::new(None, Some(r.end as isize), 1))
    }
}

/// Labels along one dimension (xarray's `sel`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    /// The position whose label equals this one (the dimension is dropped).
    At(f64),
    /// The positions whose labels lie from the first to the second, both included, in
    /// the coordinate's order (for a descending coordinate, the first is the larger:
    /// xarray's `slice(60, 30)` on latitudes from 90 to -90).
    Between(f64, f64),
    /// The position whose label is nearest to this one (`method="nearest"`; the
    /// dimension is dropped).
    Nearest(f64),
}

impl From<f64> for Label {
    fn from(v: f64) -> Label {
        Label::At(v)
    }
}
impl From<i64> for Label {
    fn from(v: i64) -> Label {
        Label::At(v as f64)
    }
}
impl From<i32> for Label {
    fn from(v: i32) -> Label {
        Label::At(v.into())
    }
}
impl From<RangeInclusive<f64>> for Label {
    fn from(r: RangeInclusive<f64>) -> Label {
        Label::Between(*r.start(), *r.end())
    }
}
impl From<RangeInclusive<i64>> for Label {
    fn from(r: RangeInclusive<i64>) -> Label {
        Label::Between(*r.start() as f64, *r.end() as f64)
    }
}
impl From<RangeInclusive<i32>> for Label {
    fn from(r: RangeInclusive<i32>) -> Label {
        Label::Between((*r.start()).into(), (*r.end()).into())
    }
}

/// The order of a coordinate's labels.
#[derive(Debug, PartialEq)]
enum Order {
    Ascending,
    Descending,
    Unsorted,
}

fn order(v: &[f64]) -> Order {
    if v.windows(2).all(|w| w[0] <= w[1]) {
        Order::Ascending
    } else if v.windows(2).all(|w| w[0] >= w[1]) {
        Order::Descending
    } else {
        Order::Unsorted
    }
}

/// The positions `label` selects on the coordinate of `dim` whose labels are `values`, or
/// why none can be.
pub(crate) fn locate(dim: &str, values: &Values, label: Label) -> Result<Isel, String> {
    let v = values.to_f64();
    let span = || {
        if v.is_empty() {
            "it is empty".to_string()
        } else {
            format!("its labels run from {} to {}", v[0], v[v.len() - 1])
        }
    };
    match label {
        Label::At(x) => {
            let found: Vec<usize> = (0..v.len()).filter(|&i| v[i] == x).collect();
            match found.as_slice() {
                [i] => Ok(Isel::At(*i)),
                [] => Err(format!(
                    "no label {x} on `{dim}` ({}); select the nearest with Label::Nearest, \
                     or a range with Label::Between",
                    span()
                )),
                many => Err(format!(
                    "label {x} is at {} positions of `{dim}` ({many:?}); select them with isel",
                    many.len()
                )),
            }
        }
        Label::Nearest(x) => {
            let best = (0..v.len())
                .filter(|&i| !v[i].is_nan())
                .min_by(|&a, &b| (v[a] - x).abs().total_cmp(&(v[b] - x).abs()))
                .ok_or_else(|| format!("`{dim}` has no label to be nearest to {x}"))?;
            Ok(Isel::At(best))
        }
        Label::Between(a, b) => {
            let (start, stop) = match order(&v) {
                Order::Ascending => (
                    v.partition_point(|&y| y < a),
                    v.partition_point(|&y| y <= b),
                ),
                Order::Descending => (
                    v.partition_point(|&y| y > a),
                    v.partition_point(|&y| y >= b),
                ),
                Order::Unsorted => {
                    return Err(format!(
                        "the labels of `{dim}` are not sorted, so a range of them selects \
                         nothing definite; select positions with isel"
                    ));
                }
            };
            let stop = stop.max(start);
            Ok(Isel::Span(Span::new(
                Some(start as isize),
                Some(stop as isize),
                1,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(start: usize, stop: usize) -> Isel {
        Isel::Span(Span::new(Some(start as isize), Some(stop as isize), 1))
    }

    #[test]
    fn ranges_follow_the_coordinate_order() {
        let up = Values::F64(vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        assert_eq!(locate("x", &up, (10.0..=30.0).into()), Ok(span(1, 4)));
        assert_eq!(locate("x", &up, (11.0..=29.0).into()), Ok(span(2, 3)));
        assert_eq!(locate("x", &up, (30.0..=10.0).into()), Ok(span(3, 3)));
        let down = Values::F64(vec![40.0, 30.0, 20.0, 10.0, 0.0]);
        assert_eq!(locate("x", &down, (30.0..=10.0).into()), Ok(span(1, 4)));
        assert_eq!(locate("x", &down, (10.0..=30.0).into()), Ok(span(3, 3)));
        let unsorted = Values::I64(vec![3, 1, 2]);
        assert!(locate("x", &unsorted, (1..=2).into()).is_err());
    }

    #[test]
    fn single_labels_are_exact_or_nearest() {
        let v = Values::I64(vec![5, 7, 9]);
        assert_eq!(locate("t", &v, 7.into()), Ok(Isel::At(1)));
        let missing = locate("t", &v, 8.into()).unwrap_err();
        assert!(missing.contains("no label 8 on `t`"), "{missing}");
        assert_eq!(locate("t", &v, Label::Nearest(8.6)), Ok(Isel::At(2)));
        let twice = Values::F64(vec![1.0, 1.0]);
        assert!(locate("t", &twice, 1.0.into()).is_err());
    }

    #[test]
    fn decoding_masks_then_scales() {
        let v = Values::I64(vec![-1, 0, 10]).decode(Some(-1.0), Some(0.5), Some(1.0));
        let Values::F64(v) = v else {
            panic!("integers decode to f64")
        };
        assert!(v[0].is_nan());
        assert_eq!(&v[1..], &[1.0, 6.0]);
    }
}
