//! Input chunks read through a view: broadcast against the chunk, transposed or sliced.
//! A program whose operations all have the chunk's shape, apart from such views of its
//! inputs, tiles flat like any other: each view fills a tile register from the input
//! where it lies (a copy along contiguous runs, a repeated value along broadcast axes, a
//! strided read otherwise), so a transposed or sliced chunk is never materialised.

use crate::collections::array::program::{AxisSlice, Op, Program};

/// How a view reads input `input`: the element at position `p` (C order, of the chunk's
/// shape) is input element `base + sum(p[d] * strides[d])`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct View {
    pub input: usize,
    pub base: usize,
    pub strides: Vec<isize>,
}

impl View {
    /// The smallest and largest input element the view reads over `shape`.
    fn extent(&self, shape: &[usize]) -> (isize, isize) {
        let mut low = self.base as isize;
        let mut high = self.base as isize;
        for (&n, &s) in shape.iter().zip(&self.strides) {
            let reach = s * (n as isize - 1);
            if reach < 0 {
                low += reach;
            } else {
                high += reach;
            }
        }
        (low, high)
    }

    /// `true` when every element the view reads over `shape` lies in an input of `len`
    /// elements.
    pub fn fits(&self, shape: &[usize], len: usize) -> bool {
        if shape.contains(&0) {
            return true;
        }
        let (low, high) = self.extent(shape);
        low >= 0 && (high as usize) < len
    }

    /// Fills `out` with the view's elements `first .. first + out.len()` (flat, C order
    /// over `shape`) from `input`: run by run along the last axis.
    #[inline(always)]
    pub fn gather(&self, shape: &[usize], input: &[f64], first: usize, out: &mut [f64]) {
        let nd = shape.len();
        let last = nd - 1;
        // The position of element `first`, then the input offset of that position.
        let mut position = vec![0usize; nd];
        let mut rest = first;
        for d in (0..nd).rev() {
            position[d] = rest % shape[d];
            rest /= shape[d];
        }
        let mut done = 0;
        while done < out.len() {
            let offset = self.base as isize
                + position
                    .iter()
                    .zip(&self.strides)
                    .map(|(&p, &s)| p as isize * s)
                    .sum::<isize>();
            let run = (shape[last] - position[last]).min(out.len() - done);
            let target = &mut out[done..done + run];
            let stride = self.strides[last];
            let at = offset as usize;
            match stride {
                1 => target.copy_from_slice(&input[at..at + run]),
                0 => target.fill(input[at]),
                _ => {
                    for (k, o) in target.iter_mut().enumerate() {
                        *o = input[(offset + k as isize * stride) as usize];
                    }
                }
            }
            done += run;
            // Next run: the last axis wraps, the others carry.
            position[last] += run;
            let mut d = last;
            while d > 0 && position[d] == shape[d] {
                position[d] = 0;
                d -= 1;
                position[d] += 1;
            }
        }
    }
}

/// Row-major strides of `shape`.
fn c_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![1isize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1] as isize;
    }
    strides
}

impl View {
    /// The whole input `input` of `shape`, as it lies.
    fn identity(input: usize, shape: &[usize]) -> View {
        View {
            input,
            base: 0,
            strides: c_strides(shape),
        }
    }

    /// This view, of `shape`, broadcast (NumPy's rules) to `target`, if it broadcasts.
    fn broadcast(&self, shape: &[usize], target: &[usize]) -> Option<View> {
        if shape.len() > target.len() {
            return None;
        }
        let skip = target.len() - shape.len();
        let mut strides = vec![0isize; target.len()];
        for (k, (&n, &s)) in shape.iter().zip(&self.strides).enumerate() {
            let t = target[skip + k];
            if n == t {
                strides[skip + k] = s;
            } else if n != 1 {
                return None;
            }
        }
        Some(View {
            input: self.input,
            base: self.base,
            strides,
        })
    }
}

/// The view node `i` of `program` is of an input, if it is one: an input, or a transpose
/// or slice of a view.
fn view_of(program: &Program, i: usize, views: &[Option<View>]) -> Option<View> {
    let node = &program.nodes[i];
    match &node.op {
        Op::Input(j) => Some(View::identity(*j, &node.shape)),
        Op::Transpose(perm, k) => {
            let v = views[*k].as_ref()?;
            Some(View {
                input: v.input,
                base: v.base,
                strides: perm.iter().map(|&p| v.strides[p]).collect(),
            })
        }
        Op::Slice(slices, k) => {
            let v = views[*k].as_ref()?;
            // A reversed part starts at its last element and steps down.
            let first = |s: &AxisSlice| {
                if s.reverse && s.len > 0 {
                    s.start + (s.len - 1) * s.step
                } else {
                    s.start
                }
            };
            let step = |s: &AxisSlice| {
                if s.reverse {
                    -(s.step as isize)
                } else {
                    s.step as isize
                }
            };
            Some(View {
                input: v.input,
                base: (v.base as isize
                    + slices
                        .iter()
                        .zip(&v.strides)
                        .map(|(s, &st)| first(s) as isize * st)
                        .sum::<isize>()) as usize,
                strides: slices
                    .iter()
                    .zip(&v.strides)
                    .map(|(s, &st)| step(s) * st)
                    .collect(),
            })
        }
        _ => None,
    }
}

/// `program` rewritten for flat tiling, with the view of each node read through one
/// (`None` when it cannot be): every node with the root's shape streams; a transpose or
/// slice of an input (or of another such view) and an input of another shape that
/// broadcasts to the root's become views; single values stay constants. A node read only
/// by a transpose or slice is not evaluated at all. Anything else of another shape
/// refuses.
pub(super) fn normalize(program: &Program) -> Option<(Program, Vec<Option<View>>)> {
    let shape = program.root().shape.clone();
    if shape.is_empty() || shape.contains(&0) {
        return None;
    }
    let n = program.nodes.len();
    let mut of: Vec<Option<View>> = Vec::with_capacity(n);
    for i in 0..n {
        let v = view_of(program, i, &of);
        of.push(v);
    }
    // Which nodes some evaluated node reads as a value (a view reads its operand as a view).
    let mut needed = vec![false; n];
    needed[n - 1] = true;
    for i in (0..n).rev() {
        if !needed[i] {
            continue;
        }
        let composes =
            matches!(program.nodes[i].op, Op::Transpose(..) | Op::Slice(..)) && of[i].is_some();
        if !composes {
            for k in program.nodes[i].op.operands() {
                needed[k] = true;
            }
        }
    }
    let mut out = program.clone();
    let mut views = vec![None; n];
    for (i, node) in program.nodes.iter().enumerate() {
        out.nodes[i].streams = false;
        if !needed[i] {
            continue;
        }
        let plain_input = matches!(node.op, Op::Input(_));
        match (&node.op, &of[i]) {
            (Op::Scalar(_) | Op::Fill(_), _) if node.shape != shape => continue,
            (_, Some(view)) if node.shape != shape || !plain_input => {
                views[i] = Some(view.broadcast(&node.shape, &shape)?);
                out.nodes[i].shape = shape.clone();
            }
            _ if node.shape == shape => {}
            _ => return None,
        }
        out.nodes[i].streams = true;
    }
    Some((out, views))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(view: &View, shape: &[usize], input: &[f64], first: usize, n: usize) -> Vec<f64> {
        let mut out = vec![f64::NAN; n];
        view.gather(shape, input, first, &mut out);
        out
    }

    #[test]
    fn a_transposed_view_reads_columns() {
        // A 2 x 3 input read as its 3 x 2 transpose.
        let input = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let view = View {
            input: 0,
            base: 0,
            strides: vec![1, 3],
        };
        assert!(view.fits(&[3, 2], 6));
        assert_eq!(
            gathered(&view, &[3, 2], &input, 0, 6),
            [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        // From the middle of a row, across rows.
        assert_eq!(gathered(&view, &[3, 2], &input, 1, 4), [3.0, 1.0, 4.0, 2.0]);
    }

    #[test]
    fn broadcast_views_repeat_rows_and_columns() {
        let row = View::identity(0, &[3]).broadcast(&[3], &[2, 3]).unwrap();
        assert_eq!(
            gathered(&row, &[2, 3], &[1.0, 2.0, 3.0], 0, 6),
            [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
        let column = View::identity(0, &[2, 1])
            .broadcast(&[2, 1], &[2, 3])
            .unwrap();
        assert_eq!(
            gathered(&column, &[2, 3], &[7.0, 8.0], 2, 3),
            [7.0, 8.0, 8.0]
        );
        assert!(View::identity(0, &[2]).broadcast(&[2], &[2, 3]).is_none());
    }

    #[test]
    fn views_that_reach_outside_their_input_do_not_fit() {
        let view = View {
            input: 0,
            base: 2,
            strides: vec![4, 2],
        };
        // Elements 2, 4, 6, 8 of a 9-element input: fits; of 8, does not.
        assert!(view.fits(&[2, 2], 9));
        assert!(!view.fits(&[2, 2], 8));
    }
}
