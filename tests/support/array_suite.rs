//! The array suite: everyday `dask.array` workloads written with mpidask, shared by the
//! bench (`benches/arrays.rs`, against dask-mpi) and the correctness test
//! (`tests/array_suite.rs`, against NumPy). `benches/array_suite.py` has the same list in
//! Python: each name, shape and expression must match it.

#![allow(dead_code)]

use mpidask::Client;
use mpidask::array::{self, Array, DType, Span, random};
use ndarray::ArrayD;
use serde::Serialize;

/// Shapes and chunks of the suite's inputs; passed as JSON to the Python side.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    /// `x` is `n` x `n` in `chunk` x `chunk` chunks.
    pub n: usize,
    pub chunk: usize,
    /// `w` is `n` x `n / 4` in column chunks `n` x `thin` (rechunked to rows `thin` high).
    pub thin: usize,
    /// The dot multiplies `x[:dot, :dot]` by its transpose.
    pub dot: usize,
    /// The generated arrays are `generated` x `generated` in `gen_chunk` x `gen_chunk` chunks.
    pub generated: usize,
    pub gen_chunk: usize,
    /// The 3-D array `z`.
    pub z_shape: [usize; 3],
    pub z_chunks: [usize; 3],
    /// Worker ranks.
    pub workers: usize,
}

impl Sizes {
    /// The bench's sizes: `x` is 3.2 GB in 32 MB chunks (the sizes of issue 15's table);
    /// several chunkings do not divide their shapes.
    pub fn bench(workers: usize) -> Sizes {
        Sizes {
            n: 20_000,
            chunk: 2_000,
            thin: 200,
            dot: 5_000,
            generated: 20_000,
            gen_chunk: 3_000,
            z_shape: [40, 2_500, 2_000],
            z_chunks: [15, 1_000, 2_000],
            workers,
        }
    }

    /// Small sizes, for the comparison with NumPy and the smoke run: no chunking divides
    /// its shape.
    pub fn small(workers: usize) -> Sizes {
        Sizes {
            n: 60,
            chunk: 17,
            thin: 7,
            dot: 25,
            generated: 50,
            gen_chunk: 16,
            z_shape: [5, 30, 20],
            z_chunks: [2, 11, 20],
            workers,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("sizes encode")
    }
}

/// The suite's inputs: `x`, `w` and `z` uniform in [0, 1) (persisted by the bench), the
/// generated arrays lazy.
#[derive(Clone)]
pub struct Inputs {
    pub x: Array,
    pub w: Array,
    pub z: Array,
    pub normal: Array,
    pub uniform: Array,
}

impl Inputs {
    pub fn new(s: &Sizes, seed: u64) -> Inputs {
        let (n, c) = (s.n, s.chunk);
        let (g, gc) = (s.generated, s.gen_chunk);
        Inputs {
            x: random::uniform(0.0, 1.0, &[n, n], &[c, c], seed),
            w: random::uniform(0.0, 1.0, &[n, n / 4], &[n, s.thin], seed + 1),
            z: random::uniform(0.0, 1.0, &s.z_shape, &s.z_chunks, seed + 2),
            normal: random::normal(0.0, 1.0, &[g, g], &[gc, gc], seed + 3),
            uniform: random::uniform(0.0, 1.0, &[g, g], &[gc, gc], seed + 4),
        }
    }

    /// `x`, `w` and `z` computed once and kept on the workers.
    pub fn persist(self, client: &Client) -> mpidask::Result<Inputs> {
        let x = self.x.persist(client)?;
        let w = self.w.persist(client)?;
        let z = self.z.persist(client)?;
        for a in [&x, &w, &z] {
            client.wait(&a.to_futures::<f64>(client)?)?;
        }
        Ok(Inputs { x, w, z, ..self })
    }

    /// Every input by name, as the Python side names them.
    pub fn named(&self) -> [(&'static str, &Array); 5] {
        [
            ("x", &self.x),
            ("w", &self.w),
            ("z", &self.z),
            ("normal", &self.normal),
            ("uniform", &self.uniform),
        ]
    }
}

/// The suite's `map_blocks` function (`sqrt_twice` in the Python suite).
pub fn sqrt_twice(block: ArrayD<f64>) -> ArrayD<f64> {
    block.mapv(|v| v.sqrt() * 2.0)
}

/// A workload: its name and the array it computes from the inputs.
pub type Workload = (&'static str, Box<dyn Fn(&Inputs) -> Array>);

fn span(start: Option<usize>, stop: Option<usize>, step: isize) -> Span {
    Span::new(start.map(|v| v as isize), stop.map(|v| v as isize), step)
}

/// Every workload, in the order of the Python suite.
pub fn workloads(s: &Sizes) -> Vec<Workload> {
    let (n, thin, m) = (s.n, s.thin, s.dot);
    let dot_operand = move |x: &Array| x.slice(&[span(None, Some(m), 1), span(None, Some(m), 1)]);
    vec![
        (
            "standardize",
            Box::new(|i: &Inputs| ((&i.x - i.x.mean_axis(0)) / i.x.std_axis(0)).sum_axis(1)),
        ),
        (
            "x_plus_xt_mean",
            Box::new(|i: &Inputs| (&i.x + i.x.t()).mean_axis(0)),
        ),
        ("xt_sum", Box::new(|i: &Inputs| i.x.t().sum())),
        ("xt_sum_axis1", Box::new(|i: &Inputs| i.x.t().sum_axis(1))),
        (
            "rechunk_to_columns",
            Box::new(move |i: &Inputs| i.x.rechunk(&[n as isize, thin as isize]).sum_axis(0)),
        ),
        (
            "rechunk_to_rows",
            Box::new(move |i: &Inputs| i.w.rechunk(&[thin as isize, (n / 4) as isize]).sum_axis(1)),
        ),
        (
            "strided_slice_sum",
            Box::new(move |i: &Inputs| {
                i.x.slice(&[span(None, None, 2), span(Some(n / 4), Some(3 * n / 4), 1)])
                    .sum_axis(1)
            }),
        ),
        ("argmax_rows", Box::new(|i: &Inputs| i.x.argmax_axis(1))),
        ("argmin_columns", Box::new(|i: &Inputs| i.x.argmin_axis(0))),
        (
            "where_sum",
            Box::new(|i: &Inputs| array::where_(&i.x.gt(0.5), &i.x, &i.x * 2.0).sum()),
        ),
        (
            "dot",
            Box::new(move |i: &Inputs| {
                let a = dot_operand(&i.x);
                a.dot(&a.t()).sum_axis(0)
            }),
        ),
        ("normal_sum", Box::new(|i: &Inputs| i.normal.sum())),
        ("uniform_sum", Box::new(|i: &Inputs| i.uniform.sum())),
        ("var_columns", Box::new(|i: &Inputs| i.x.var_axis(0))),
        ("std_rows", Box::new(|i: &Inputs| i.x.std_axis(1))),
        (
            "concatenate_sum",
            Box::new(|i: &Inputs| array::concatenate(&[i.x.clone(), &i.x * 2.0], 0).sum_axis(0)),
        ),
        (
            "map_blocks_sum",
            Box::new(|i: &Inputs| i.x.map_blocks(sqrt_twice).sum()),
        ),
        ("mean_3d_middle", Box::new(|i: &Inputs| i.z.mean_axis(1))),
    ]
}

/// Computes `a` on the client as `f64` values (indices and booleans converted).
pub fn compute_f64(client: &Client, a: &Array) -> mpidask::Result<ArrayD<f64>> {
    Ok(match a.dtype() {
        DType::F64 => a.compute::<f64>(client)?,
        DType::I64 => a.compute::<i64>(client)?.mapv(|v| v as f64),
        DType::Bool => a.compute::<bool>(client)?.mapv(|v| f64::from(u8::from(v))),
        DType::F32 => a.compute::<f32>(client)?.mapv(f64::from),
        DType::I32 => a.compute::<i32>(client)?.mapv(f64::from),
        DType::U8 => a.compute::<u8>(client)?.mapv(f64::from),
    })
}

/// An array as the Python side reads it: `{"shape": [...], "values": [...]}`.
pub fn to_json(a: &ArrayD<f64>) -> serde_json::Value {
    serde_json::json!({
        "shape": a.shape(),
        "values": a.iter().copied().collect::<Vec<f64>>(),
    })
}
