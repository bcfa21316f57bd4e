//! Delayed calls on the rows of a 2-D `f64` chunk read where the chunk lies: the function
//! gets an [`ArrayView2`] of the stored value's bytes (no copy, no element-by-element
//! decoding), and its other argument decoded as usual. The per-chunk steps of iterative
//! estimators (a k-means pass, a gradient) read every chunk many times; this keeps each
//! read to one pass over memory.

use crate::collections::array::kernel::raw_f64;
use crate::delayed::{Delayed, Slot, call_through};
use crate::protocol::{ArgSlot, Bytes};
use crate::task::{self, Arg, CallError, IntoArgs, TaskInput, decode_args, encode_result};
use ndarray::{ArrayD, ArrayView2};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A function of a chunk's rows and one more argument, failing with a message.
pub(crate) trait RowsFn<P, T>:
    Fn(ArrayView2<'_, f64>, P) -> Result<T, String> + Copy + Send + Sync + 'static
{
}

impl<F, P, T> RowsFn<P, T> for F where
    F: Fn(ArrayView2<'_, f64>, P) -> Result<T, String> + Copy + Send + Sync + 'static
{
}

/// Records `f(rows, extra)` where `rows` is the 2-D chunk `chunk` viewed in place. `f`
/// must be a function item or a closure that captures nothing (as every task function).
/// A chunk that is not 2-D fails the task with a message naming `f`.
pub(crate) fn delayed_on_rows<F, P, T>(
    f: F,
    chunk: &Delayed<ArrayD<f64>>,
    extra: impl Arg<P, Slot>,
) -> Delayed<T>
where
    F: RowsFn<P, T>,
    P: Serialize + DeserializeOwned + 'static,
    T: Serialize + 'static,
{
    let _ = f;
    let name = task::function_name::<F>();
    let args = IntoArgs::<(ArrayD<f64>, P), _>::into_slots((chunk, extra))
        .unwrap_or_else(|e| panic!("an argument of {name} cannot be encoded: {e}"));
    call_through(rows_trampoline::<F, P, T>, name, args)
}

/// [`delayed_on_rows`] with two more arguments, which `f` gets as a pair.
pub(crate) fn delayed_on_rows2<F, A, B, T>(
    f: F,
    chunk: &Delayed<ArrayD<f64>>,
    a: impl Arg<A, Slot>,
    b: impl Arg<B, Slot>,
) -> Delayed<T>
where
    F: RowsFn<(A, B), T>,
    A: Serialize + DeserializeOwned + 'static,
    B: Serialize + DeserializeOwned + 'static,
    T: Serialize + 'static,
{
    let _ = f;
    let name = task::function_name::<F>();
    let args = IntoArgs::<(ArrayD<f64>, A, B), _>::into_slots((chunk, a, b))
        .unwrap_or_else(|e| panic!("an argument of {name} cannot be encoded: {e}"));
    call_through(rows_trampoline::<F, (A, B), T>, name, args)
}

/// The worker's side of [`delayed_on_rows`]: the chunk from the first slot, the other
/// slots decoded together as `P` (a pair for two slots).
fn rows_trampoline<F, P, T>(input: &TaskInput<'_>) -> Result<Bytes, CallError>
where
    F: RowsFn<P, T>,
    P: Serialize + DeserializeOwned + 'static,
    T: Serialize + 'static,
{
    let name = || task::function_name::<F>();
    let (chunk, deps) = match input.args {
        [ArgSlot::Value(bytes), _, ..] => (bytes.as_slice(), input.deps),
        [ArgSlot::Future(_), _, ..] => {
            let (first, rest) = input.deps.split_first().ok_or_else(|| {
                CallError::Corrupt(format!("{}: the chunk's value is missing", name()))
            })?;
            (first.as_slice(), rest)
        }
        _ => {
            return Err(CallError::Corrupt(format!(
                "{} takes a chunk and more arguments, not {} arguments of these kinds",
                name(),
                input.args.len()
            )));
        }
    };
    let (shape, bytes) =
        raw_f64(chunk).map_err(|e| format!("{}: the chunk is not an f64 array: {e}", name()))?;
    let &[rows, columns] = shape.as_slice() else {
        return Err(format!("{}: a chunk of shape {shape:?} is not 2-D", name()).into());
    };
    // Bytes not aligned for f64 (a value received into an unaligned buffer) are copied.
    let copied: Vec<f64>;
    let values: &[f64] = match bytemuck::try_cast_slice(bytes) {
        Ok(values) => values,
        Err(_) => {
            copied = bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            &copied
        }
    };
    let view = ArrayView2::from_shape((rows, columns), values)
        .map_err(|e| format!("{}: the chunk's shape: {e}", name()))?;
    let extra: P = decode_args(&input.part(1..input.args.len(), deps))
        .map_err(crate::task::describe_decode_error::<F>)?;
    let value = task::conjure::<F>()(view, extra).map_err(CallError::Failed)?;
    encode_result(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::array;
    use crate::delayed::delayed;
    use ndarray::Array2;

    fn column_sums(rows: ArrayView2<'_, f64>, scale: f64) -> Result<Vec<f64>, String> {
        Ok(rows.sum_axis(ndarray::Axis(0)).mapv(|v| v * scale).to_vec())
    }

    fn weighted(rows: ArrayView2<'_, f64>, (w, scale): (Vec<f64>, f64)) -> Result<f64, String> {
        Ok(rows.dot(&ndarray::Array1::from(w)).sum() * scale)
    }

    fn refuse(_rows: ArrayView2<'_, f64>, what: String) -> Result<u8, String> {
        Err(what)
    }

    #[test]
    fn a_function_reads_each_chunk_in_place() {
        crate::run_local(crate::RuntimeArgs::default(), |client| {
            let v = Array2::from_shape_fn((7, 3), |(i, j)| (i * 3 + j) as f64).into_dyn();
            let x = array::from_array(&v, &[3, 3]).persist(client).unwrap();
            let sums: Vec<Vec<f64>> = x
                .to_delayed::<f64>()
                .iter()
                .map(|chunk| {
                    delayed_on_rows(column_sums, chunk, 2.0)
                        .compute(client)
                        .unwrap()
                })
                .collect();
            assert_eq!(
                sums,
                vec![
                    vec![18.0, 24.0, 30.0],
                    vec![72.0, 78.0, 84.0],
                    vec![36.0, 38.0, 40.0]
                ]
            );
            let chunk = &x.to_delayed::<f64>()[0];
            let w = delayed(|n: usize| vec![1.0; n], 3);
            let total = delayed_on_rows2(weighted, chunk, &w, 0.5)
                .compute(client)
                .unwrap();
            assert_eq!(total, 18.0);
            let e = delayed_on_rows(refuse, chunk, "no".to_string())
                .compute(client)
                .unwrap_err();
            let text = format!("{:#}", anyhow::Error::new(e));
            assert!(text.contains(": no"), "{text}");
        });
    }

    #[test]
    fn a_chunk_that_is_not_2_d_is_an_error_naming_the_function() {
        crate::run_local(crate::RuntimeArgs::default(), |client| {
            let x = array::arange(0.0, 5.0, 1.0, 5).persist(client).unwrap();
            let chunk = &x.to_delayed::<f64>()[0];
            let e = delayed_on_rows(column_sums, chunk, 1.0)
                .compute(client)
                .unwrap_err();
            let text = format!("{:#}", anyhow::Error::new(e));
            assert!(
                text.contains("column_sums") && text.contains("not 2-D"),
                "{text}"
            );
        });
    }
}
