//! The geometry of a resident stencil: the chunks' grid, each chunk's halo along each
//! axis, its neighbours, and the ranges of a padded block that a halo and the cells filling
//! a neighbour's halo are.

use super::super::Boundary;
use crate::collections::array::grid;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, Axis, Slice};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One side of a chunk along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Side {
    Lo,
    Hi,
}

impl Side {
    /// The tag of the messages that fill this side's halo.
    pub(super) fn tag(self) -> i32 {
        match self {
            Side::Lo => 0x51,
            Side::Hi => 0x52,
        }
    }
}

/// What every member of the MPI task is told: the array's chunk sizes per axis, the halo
/// depths, the boundary and the number of steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(super) run: u64,
    pub(super) sizes: Vec<Vec<usize>>,
    pub(super) depth: Vec<usize>,
    pub(super) boundary: Boundary,
    pub(super) steps: u64,
}

impl Plan {
    /// Why this plan cannot run resident, if it cannot.
    pub(super) fn check(&self) -> std::result::Result<(), String> {
        if self.sizes.is_empty() || self.sizes.len() != self.depth.len() {
            return Err(format!(
                "a stencil plan with {} axes of chunks and {} depths",
                self.sizes.len(),
                self.depth.len()
            ));
        }
        let mut count: usize = 1;
        for (axis, (sizes, &d)) in self.sizes.iter().zip(&self.depth).enumerate() {
            if let Some(&n) = sizes.iter().find(|&&n| n == 0 || n < d) {
                return Err(format!(
                    "a chunk of {n} cells along axis {axis}, where the halo is {d} deep"
                ));
            }
            count = count
                .checked_mul(sizes.len())
                .filter(|&c| c > 0)
                .ok_or_else(|| format!("no chunks, or too many, along axis {axis}"))?;
        }
        Ok(())
    }

    pub(super) fn count(&self) -> usize {
        grid::count(&self.sizes)
    }

    /// The grid index of chunk `chunk` (C order).
    pub(super) fn index(&self, chunk: usize) -> Vec<usize> {
        grid::unravel(chunk, &grid::grid(&self.sizes))
    }

    /// The chunk at grid index `index`.
    pub(super) fn chunk(&self, index: &[usize]) -> usize {
        grid::ravel(index, &grid::grid(&self.sizes))
    }

    /// The halo cells before and after chunk `k` along `axis`.
    pub(super) fn pads(&self, axis: usize, k: usize) -> (usize, usize) {
        let d = self.depth[axis];
        if d == 0 {
            return (0, 0);
        }
        if self.boundary == Boundary::None {
            let last = self.sizes[axis].len() - 1;
            (if k == 0 { 0 } else { d }, if k == last { 0 } else { d })
        } else {
            (d, d)
        }
    }

    /// Per axis, the halo cells before and after chunk `chunk`.
    pub(super) fn pads_of(&self, chunk: usize) -> Vec<(usize, usize)> {
        let index = self.index(chunk);
        (0..index.len()).map(|a| self.pads(a, index[a])).collect()
    }

    /// The shape of chunk `chunk` with its halo.
    pub(super) fn padded_shape(&self, chunk: usize) -> Vec<usize> {
        let index = self.index(chunk);
        (0..index.len())
            .map(|a| {
                let (lo, hi) = self.pads(a, index[a]);
                lo + self.sizes[a][index[a]] + hi
            })
            .collect()
    }

    /// The index along `axis` of the chunk whose cells fill the `side` halo of chunk `k`
    /// (itself, for a periodic axis of one chunk); `None` at the array's edge.
    pub(super) fn neighbour(&self, axis: usize, k: usize, side: Side) -> Option<usize> {
        let n = self.sizes[axis].len();
        let periodic = self.boundary == Boundary::Periodic;
        match side {
            Side::Lo if k > 0 => Some(k - 1),
            Side::Lo => periodic.then(|| n - 1),
            Side::Hi if k + 1 < n => Some(k + 1),
            Side::Hi => periodic.then_some(0),
        }
    }

    /// The chunk whose cells fill the `side` halo of chunk `chunk` along `axis`.
    pub(super) fn neighbour_chunk(&self, chunk: usize, axis: usize, side: Side) -> Option<usize> {
        let mut index = self.index(chunk);
        index[axis] = self.neighbour(axis, index[axis], side)?;
        Some(self.chunk(&index))
    }

    /// Along `axis`, in the padded block of chunk `chunk`: its `side` halo, and its own
    /// cells that fill the halo of the neighbour on that side.
    pub(super) fn ranges(
        &self,
        chunk: usize,
        axis: usize,
        side: Side,
    ) -> (Range<usize>, Range<usize>) {
        let k = self.index(chunk)[axis];
        let (lo, hi) = self.pads(axis, k);
        let (n, d) = (self.sizes[axis][k], self.depth[axis]);
        match side {
            Side::Lo => (0..lo, lo..lo + d),
            Side::Hi => (lo + n..lo + n + hi, lo + n - d..lo + n),
        }
    }
}

pub(super) fn along<T>(block: &ArrayD<T>, axis: usize, range: Range<usize>) -> ArrayViewD<'_, T> {
    block.slice_axis(Axis(axis), Slice::from(range))
}

pub(super) fn along_mut<T>(
    block: &mut ArrayD<T>,
    axis: usize,
    range: Range<usize>,
) -> ArrayViewMutD<'_, T> {
    block.slice_axis_mut(Axis(axis), Slice::from(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sizes: Vec<Vec<usize>>, depth: Vec<usize>, boundary: Boundary) -> Plan {
        Plan {
            run: 7,
            sizes,
            depth,
            boundary,
            steps: 1,
        }
    }

    #[test]
    fn chunks_are_numbered_in_c_order() {
        let p = plan(
            vec![vec![5, 5, 3], vec![4, 4, 3]],
            vec![1, 1],
            Boundary::Reflect,
        );
        assert_eq!(p.count(), 9);
        for chunk in 0..9 {
            assert_eq!(p.chunk(&p.index(chunk)), chunk);
        }
        assert_eq!(p.index(5), vec![1, 2]);
        assert_eq!(p.padded_shape(5), vec![7, 5]);
    }

    #[test]
    fn neighbours_wrap_only_when_periodic() {
        let sizes = vec![vec![5, 5, 3]];
        let periodic = plan(sizes.clone(), vec![2], Boundary::Periodic);
        assert_eq!(periodic.neighbour_chunk(0, 0, Side::Lo), Some(2));
        assert_eq!(periodic.neighbour_chunk(2, 0, Side::Hi), Some(0));
        let one = plan(vec![vec![6]], vec![2], Boundary::Periodic);
        assert_eq!(one.neighbour_chunk(0, 0, Side::Lo), Some(0), "itself");
        let reflect = plan(sizes, vec![2], Boundary::Reflect);
        assert_eq!(reflect.neighbour_chunk(0, 0, Side::Lo), None);
        assert_eq!(reflect.neighbour_chunk(1, 0, Side::Lo), Some(0));
    }

    #[test]
    fn halos_and_the_cells_that_fill_them() {
        let p = plan(vec![vec![5, 5, 3]], vec![2], Boundary::Nearest);
        // Chunk 1 padded: 2 + 5 + 2 cells.
        assert_eq!(p.ranges(1, 0, Side::Lo), (0..2, 2..4));
        assert_eq!(p.ranges(1, 0, Side::Hi), (7..9, 5..7));
        // `None`: no halo at the array's edges.
        let none = plan(vec![vec![5, 5, 3]], vec![2], Boundary::None);
        assert_eq!(none.pads_of(0), vec![(0, 2)]);
        assert_eq!(none.pads_of(2), vec![(2, 0)]);
        assert_eq!(none.ranges(0, 0, Side::Lo).0, 0..0);
        assert_eq!(none.padded_shape(1), vec![9]);
    }

    #[test]
    fn plans_that_cannot_run_resident_say_why() {
        let shallow = plan(vec![vec![5, 1]], vec![2], Boundary::Reflect);
        assert!(shallow.check().unwrap_err().contains("chunk of 1 cells"));
        let mismatched = plan(vec![vec![5]], vec![1, 1], Boundary::Reflect);
        assert!(mismatched.check().is_err());
        assert!(
            plan(vec![vec![5, 1]], vec![1], Boundary::Reflect)
                .check()
                .is_ok()
        );
        assert!(
            plan(vec![vec![5, 1]], vec![0], Boundary::Reflect)
                .check()
                .is_ok()
        );
    }
}
