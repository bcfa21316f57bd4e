//! Chunk grids: how an array's axes are cut into chunks, and the arithmetic between chunk
//! indices, offsets and shapes.

/// The chunk sizes along every axis (like `dask.array`'s `chunks`).
pub type Chunks = Vec<Vec<usize>>;

/// Cuts `shape` into chunks of (at most) `sizes` along each axis. A size of 0 is an error
/// unless the axis is empty.
pub fn regular(shape: &[usize], sizes: &[usize]) -> Result<Chunks, String> {
    if sizes.len() != shape.len() {
        return Err(format!(
            "chunk sizes {sizes:?} do not match the shape {shape:?}: give one size per axis"
        ));
    }
    shape
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(axis, (&n, &c))| {
            if n == 0 {
                return Ok(vec![0]);
            }
            if c == 0 {
                return Err(format!("chunk size 0 on axis {axis} of shape {shape:?}"));
            }
            let mut sizes = vec![c; n / c];
            if n % c != 0 {
                sizes.push(n % c);
            }
            Ok(sizes)
        })
        .collect()
}

/// Chunks per axis.
pub fn grid(chunks: &Chunks) -> Vec<usize> {
    chunks.iter().map(Vec::len).collect()
}

/// Number of chunks.
pub fn count(chunks: &Chunks) -> usize {
    chunks.iter().map(Vec::len).product()
}

/// The chunk index (per axis) of flat chunk number `flat`, C order.
pub fn unravel(flat: usize, grid: &[usize]) -> Vec<usize> {
    let mut index = vec![0; grid.len()];
    let mut rest = flat;
    for axis in (0..grid.len()).rev() {
        index[axis] = rest % grid[axis];
        rest /= grid[axis];
    }
    index
}

/// The flat (C order) number of chunk `index`.
pub fn ravel(index: &[usize], grid: &[usize]) -> usize {
    index
        .iter()
        .zip(grid)
        .fold(0, |flat, (&i, &n)| flat * n + i)
}

/// Shape of chunk `index`.
pub fn chunk_shape(chunks: &Chunks, index: &[usize]) -> Vec<usize> {
    chunks
        .iter()
        .zip(index)
        .map(|(sizes, &i)| sizes[i])
        .collect()
}

/// Global position of element 0 of chunk `index`.
pub fn chunk_offset(chunks: &Chunks, index: &[usize]) -> Vec<usize> {
    chunks
        .iter()
        .zip(index)
        .map(|(sizes, &i)| sizes[..i].iter().sum())
        .collect()
}

/// Starts of the chunks along one axis, plus the end.
pub fn boundaries(sizes: &[usize]) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(sizes.len() + 1);
    let mut at = 0;
    bounds.push(0);
    for s in sizes {
        at += s;
        bounds.push(at);
    }
    bounds
}

/// All chunk indices, C order.
pub fn indices(chunks: &Chunks) -> impl Iterator<Item = Vec<usize>> + '_ {
    let grid = grid(chunks);
    (0..count(chunks)).map(move |flat| unravel(flat, &grid))
}

/// NumPy broadcasting of two shapes; `None` if they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

/// The chunk of an operand of shape `shape` that meets output chunk `index` (of an
/// output with `out_ndim` axes) under broadcasting.
pub fn operand_index(index: &[usize], shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let skip = out_shape.len() - shape.len();
    shape
        .iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 1 && out_shape[d + skip] != 1 {
                0
            } else {
                index[d + skip]
            }
        })
        .collect()
}

/// Normalises a possibly negative axis for `ndim` axes.
pub fn axis(axis: isize, ndim: usize) -> Result<usize, String> {
    let n = ndim as isize;
    let a = if axis < 0 { axis + n } else { axis };
    if (0..n).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!(
            "axis {axis} is out of range for an array with {ndim} axes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_chunks_and_index_arithmetic() {
        let chunks = regular(&[10, 4], &[3, 4]).unwrap();
        assert_eq!(chunks, vec![vec![3, 3, 3, 1], vec![4]]);
        assert_eq!(grid(&chunks), vec![4, 1]);
        assert_eq!(chunk_shape(&chunks, &[3, 0]), vec![1, 4]);
        assert_eq!(chunk_offset(&chunks, &[2, 0]), vec![6, 0]);
        for flat in 0..count(&chunks) {
            assert_eq!(ravel(&unravel(flat, &grid(&chunks)), &grid(&chunks)), flat);
        }
        assert!(regular(&[5], &[0]).is_err());
        assert_eq!(
            regular(&[0, 3], &[2, 2]).unwrap(),
            vec![vec![0], vec![2, 1]]
        );
    }

    #[test]
    fn broadcasting_and_operand_chunks() {
        assert_eq!(broadcast(&[5, 1, 3], &[4, 1]), Some(vec![5, 4, 3]));
        assert_eq!(broadcast(&[2, 3], &[4]), None);
        assert_eq!(operand_index(&[2, 1], &[1, 7], &[5, 7]), vec![0, 1]);
        assert_eq!(operand_index(&[2, 1], &[7], &[5, 7]), vec![1]);
        assert_eq!(axis(-1, 3), Ok(2));
        assert!(axis(3, 3).is_err());
    }
}
