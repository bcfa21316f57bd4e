//! Products of n-dimensional arrays: `einsum` (explicit subscripts, `...` for leading
//! axes), and `tensordot` and `matmul` made of it. Each pair of operands is contracted by
//! the 2-D [`Array::dot`] (BLAS on each pair of blocks): the operands are transposed and
//! reshaped into matrices (rechunked as `reshape` does when it merges axes), multiplied and
//! reshaped back. Axes shared by both operands and kept in the result (a batch, as in
//! `bij,bjk->bik`) are multiplied elementwise and summed when the matrices are small, or
//! as one 2-D product per batch element when they are large.

use super::structure::Span;
use super::{Array, DType, ReduceOp, stack};

/// Above this many multiply-adds per batch element, a batched product is one 2-D product
/// per batch element; at or below it, an elementwise product summed over the contracted
/// axis (no matrix is formed, so any number of small matrices is cheap).
const SMALL_BATCH_PRODUCT: usize = 1 << 16;

/// At most this many batch elements are multiplied as separate 2-D products.
const MAX_BATCH_PRODUCTS: usize = 4096;

/// An operand with a letter for each of its axes.
#[derive(Clone)]
struct Labelled {
    array: Array,
    labels: Vec<char>,
}

impl Labelled {
    fn size(&self, label: char) -> Option<usize> {
        let at = self.labels.iter().position(|&l| l == label)?;
        Some(self.array.shape()[at])
    }

    /// Sums over the axes whose letters `keep` rejects.
    fn sum_unless(self, keep: impl Fn(char) -> bool) -> Labelled {
        let axes: Vec<isize> = (0..self.labels.len())
            .filter(|&a| !keep(self.labels[a]))
            .map(|a| a as isize)
            .collect();
        if axes.is_empty() {
            return self;
        }
        let labels = self.labels.iter().copied().filter(|&l| keep(l)).collect();
        Labelled {
            array: self.array.reduce(ReduceOp::Sum, Some(&axes), false),
            labels,
        }
    }

    /// Drops the axis of `label` (of length 1).
    fn drop_unit(self, label: char) -> Labelled {
        let at = self
            .labels
            .iter()
            .position(|&l| l == label)
            .expect("a label");
        let mut shape: Vec<isize> = self.array.shape().iter().map(|&n| n as isize).collect();
        shape.remove(at);
        let mut labels = self.labels;
        labels.remove(at);
        Labelled {
            array: self.array.reshape(&shape),
            labels,
        }
    }

    /// The array with its axes in the order of `order` (a permutation of its letters).
    fn ordered(&self, order: &[char]) -> Array {
        let perm: Vec<usize> = order
            .iter()
            .map(|l| self.labels.iter().position(|m| m == l).expect("a label"))
            .collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            self.array.clone()
        } else {
            self.array.transpose(&perm)
        }
    }

    /// The array with its axes ordered as `groups` and each group merged into one axis
    /// (an empty group becomes an axis of length 1).
    fn grouped(&self, groups: &[&[char]]) -> Array {
        let order: Vec<char> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        let ordered = self.ordered(&order);
        let shape: Vec<isize> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&l| self.size(l).expect("a label"))
                    .product::<usize>() as isize
            })
            .collect();
        ordered.reshape(&shape)
    }
}

/// Sizes of letters, for reshaping back.
fn sizes(labels: &[char], of: &[&Labelled]) -> Vec<isize> {
    labels
        .iter()
        .map(|&l| {
            of.iter()
                .find_map(|o| o.size(l))
                .expect("a letter of an operand") as isize
        })
        .collect()
}

/// Contracts two operands, keeping the letters `keep` accepts.
fn contract(a: Labelled, b: Labelled, keep: &dyn Fn(char) -> bool) -> Labelled {
    // A letter of length 1 on one side against a longer one on the other broadcasts: it
    // is dropped from the side where it has length 1.
    let (mut a, mut b) = (a, b);
    for l in a.labels.clone() {
        if let (Some(n), Some(m)) = (a.size(l), b.size(l))
            && n != m
        {
            if n == 1 {
                a = a.drop_unit(l);
            } else if m == 1 {
                b = b.drop_unit(l);
            }
        }
    }
    let (la, lb) = (a.labels.clone(), b.labels.clone());
    let a = a.sum_unless(|l| lb.contains(&l) || keep(l));
    let b = b.sum_unless(|l| la.contains(&l) || keep(l));
    let batch: Vec<char> = a
        .labels
        .iter()
        .copied()
        .filter(|l| b.labels.contains(l) && keep(*l))
        .collect();
    let inner: Vec<char> = a
        .labels
        .iter()
        .copied()
        .filter(|l| b.labels.contains(l) && !keep(*l))
        .collect();
    let free_a: Vec<char> = a
        .labels
        .iter()
        .copied()
        .filter(|l| !b.labels.contains(l))
        .collect();
    let free_b: Vec<char> = b
        .labels
        .iter()
        .copied()
        .filter(|l| !a.labels.contains(l))
        .collect();
    let count = |ls: &[char]| -> usize { sizes(ls, &[&a, &b]).iter().product::<isize>() as usize };
    let labels: Vec<char> = [&batch[..], &free_a, &free_b].concat();
    let shape = sizes(&labels, &[&a, &b]);
    let array = if batch.is_empty() {
        // A plain matrix product; 2-D operands already in order are not reshaped at all.
        let m = if free_a.len() == 1 && inner.len() == 1 {
            a.ordered(&[free_a[0], inner[0]])
        } else {
            a.grouped(&[&free_a, &inner])
        };
        let n = if free_b.len() == 1 && inner.len() == 1 {
            b.ordered(&[inner[0], free_b[0]])
        } else {
            b.grouped(&[&inner, &free_b])
        };
        m.dot(&n).reshape(&shape)
    } else {
        let (fa, k, fb) = (count(&free_a), count(&inner), count(&free_b));
        let nb = batch.len();
        let batch_shape = sizes(&batch, &[&a, &b]);
        let batches = count(&batch);
        if fa.saturating_mul(k).saturating_mul(fb) <= SMALL_BATCH_PRODUCT {
            // batch x fa x k x 1 times batch x 1 x k x fb, summed over k.
            let mut sa = batch_shape.clone();
            sa.extend([fa as isize, k as isize, 1]);
            let mut sb = batch_shape.clone();
            sb.extend([1, k as isize, fb as isize]);
            let x = a
                .grouped(&batch_groups(&batch, &[&free_a, &inner]))
                .reshape(&sa);
            let y = b
                .grouped(&batch_groups(&batch, &[&inner, &free_b]))
                .reshape(&sb);
            let product = (&x * &y).reduce(ReduceOp::Sum, Some(&[nb as isize + 1]), false);
            product.reshape(&shape)
        } else if batches > MAX_BATCH_PRODUCTS {
            return Labelled {
                array: Array::invalid(format!(
                    "einsum: a batch of {batches} products of {fa} x {k} by {k} x {fb} \
                     matrices (batch axes {batch:?}) is more than {MAX_BATCH_PRODUCTS} \
                     separate products; move a batch axis into the matrices or contract \
                     smaller pieces"
                )),
                labels,
            };
        } else {
            let x = a.grouped(&[&batch, &free_a, &inner]);
            let y = b.grouped(&[&batch, &inner, &free_b]);
            let parts: Vec<Array> = (0..batches as isize)
                .map(|i| {
                    let pick = |m: &Array| {
                        m.slice(&[Span::from(i..i + 1), Span::all(), Span::all()])
                            .reshape(&[m.shape()[1] as isize, m.shape()[2] as isize])
                    };
                    pick(&x).dot(&pick(&y))
                })
                .collect();
            stack(&parts, 0).reshape(&shape)
        }
    };
    Labelled { array, labels }
}

/// Groups for `grouped` with each batch letter an axis of its own, in front.
fn batch_groups<'a>(batch: &'a [char], rest: &[&'a [char]]) -> Vec<&'a [char]> {
    let mut groups: Vec<&[char]> = batch.chunks(1).collect();
    groups.extend_from_slice(rest);
    groups
}

/// The letters of one operand's subscripts, with `...` expanded for `ndim` axes into
/// `ellipsis` (the letters it stands for, the last ones matching the last axes).
fn parse_operand(
    text: &str,
    ndim: usize,
    ellipsis: &[char],
    which: &str,
) -> Result<Vec<char>, String> {
    let dots = text.matches("...").count();
    if dots > 1 {
        return Err(format!("{which} `{text}` has more than one `...`"));
    }
    let plain: Vec<char> = text.replace("...", "").chars().collect();
    if let Some(bad) = plain.iter().find(|c| !c.is_ascii_alphabetic()) {
        return Err(format!(
            "{which} `{text}` holds `{bad}`: subscripts are letters and `...`"
        ));
    }
    if dots == 0 {
        if plain.len() != ndim {
            return Err(format!(
                "{which} `{text}` names {} axes; its array has {ndim}",
                plain.len()
            ));
        }
        return Ok(plain);
    }
    if plain.len() > ndim {
        return Err(format!(
            "{which} `{text}` names {} axes besides `...`; its array has {ndim}",
            plain.len()
        ));
    }
    let extra = ndim - plain.len();
    let (before, after) = text.split_once("...").expect("one `...`");
    let mut labels: Vec<char> = before.chars().collect();
    labels.extend_from_slice(&ellipsis[ellipsis.len() - extra..]);
    labels.extend(after.chars());
    Ok(labels)
}

/// Einstein summation over `operands`, as `numpy.einsum` with explicit output subscripts
/// (`"ij,jk->ik"`; `...` stands for leading axes, broadcast where one has length 1): each
/// letter missing from the output is summed over. A letter repeated within one operand (a
/// diagonal, `"ii->i"`) is not taken; an error says so. Integers stay integers; booleans
/// are multiplied as integers.
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let a = array::arange(0.0, 6.0, 1.0, 2).reshape(&[2, 3]);
///     let b = array::ones(&[3, 2], &[2, 2]);
///     let c = array::einsum("ij,jk->ik", &[&a, &b]).compute::<f64>(client).unwrap();
///     assert_eq!(c.as_slice().unwrap(), &[3.0, 3.0, 12.0, 12.0]);
/// });
/// ```
pub fn einsum(subscripts: &str, operands: &[&Array]) -> Array {
    match einsum_checked(subscripts, operands) {
        Ok(a) => a,
        Err(message) => Array::invalid(format!("einsum(\"{subscripts}\"): {message}")),
    }
}

fn einsum_checked(subscripts: &str, operands: &[&Array]) -> Result<Array, String> {
    for a in operands {
        if let Err(e) = a.check() {
            return Err(e.to_string());
        }
    }
    let spec: String = subscripts.chars().filter(|c| !c.is_whitespace()).collect();
    let Some((inputs, output)) = spec.split_once("->") else {
        return Err("give the output's subscripts after `->` (e.g. \"ij,jk->ik\")".into());
    };
    let inputs: Vec<&str> = inputs.split(',').collect();
    if inputs.len() != operands.len() || operands.is_empty() {
        return Err(format!(
            "the subscripts name {} operands; {} arrays were given",
            inputs.len(),
            operands.len()
        ));
    }
    // Letters `...` may stand for: as many as the most axes of an operand, of those not
    // written anywhere (upper case first); an operand with `e` axes in its `...` takes
    // the last `e` of them.
    let used: Vec<char> = spec.chars().filter(|c| c.is_ascii_alphabetic()).collect();
    let most = operands.iter().map(|a| a.ndim()).max().unwrap_or(0);
    let ellipsis: Vec<char> = ('A'..='Z')
        .chain('a'..='z')
        .filter(|c| !used.contains(c))
        .take(most)
        .collect();
    if ellipsis.len() < most {
        return Err("too many axes for the letters left to `...`".into());
    }
    let mut labelled = Vec::with_capacity(operands.len());
    let mut ellipsis_len = 0;
    for (k, (text, array)) in inputs.iter().zip(operands).enumerate() {
        let which = format!("operand {k}");
        let labels = parse_operand(text, array.ndim(), &ellipsis, &which)?;
        if text.contains("...") {
            ellipsis_len = ellipsis_len.max(array.ndim() + 3 - text.len());
        }
        for (i, l) in labels.iter().enumerate() {
            if labels[..i].contains(l) {
                return Err(format!(
                    "{which} `{text}` repeats `{l}` (a diagonal), which is not supported: \
                     take the diagonal first"
                ));
            }
        }
        labelled.push(Labelled {
            array: (*array).clone(),
            labels,
        });
    }
    // The output: `...` stands for the longest ellipsis of the inputs.
    let out_plain: Vec<char> = output.replace("...", "").chars().collect();
    if let Some(bad) = out_plain.iter().find(|c| !c.is_ascii_alphabetic()) {
        return Err(format!(
            "the output `{output}` holds `{bad}`: subscripts are letters and `...`"
        ));
    }
    let out: Vec<char> = if output.contains("...") {
        let (before, after) = output.split_once("...").expect("one `...`");
        let mut out: Vec<char> = before.chars().collect();
        out.extend_from_slice(&ellipsis[ellipsis.len() - ellipsis_len..]);
        out.extend(after.chars());
        out
    } else {
        out_plain
    };
    for (i, l) in out.iter().enumerate() {
        if out[..i].contains(l) {
            return Err(format!("the output `{output}` repeats `{l}`"));
        }
        if !labelled.iter().any(|o| o.labels.contains(l)) {
            return Err(format!(
                "the output `{output}` names `{l}`, which no operand has"
            ));
        }
    }
    // Every letter has one length (or 1, which broadcasts).
    for (k, o) in labelled.iter().enumerate() {
        for &l in &o.labels {
            let n = o.size(l).expect("its own letter");
            for (j, p) in labelled.iter().enumerate().skip(k + 1) {
                if let Some(m) = p.size(l)
                    && n != m
                    && n != 1
                    && m != 1
                {
                    return Err(format!(
                        "`{l}` has length {n} in operand {k} (shape {:?}) and {m} in \
                         operand {j} (shape {:?})",
                        o.array.shape(),
                        p.array.shape()
                    ));
                }
            }
        }
    }
    // Contract left to right, keeping the letters of the output and of the operands still
    // to come.
    let mut rest = labelled.into_iter();
    let mut acc = rest.next().expect("one operand at least");
    let later: Vec<Labelled> = rest.collect();
    for (k, next) in later.iter().enumerate() {
        let needed: Vec<char> = out
            .iter()
            .copied()
            .chain(later[k + 1..].iter().flat_map(|o| o.labels.iter().copied()))
            .collect();
        acc = contract(acc, next.clone(), &|l| needed.contains(&l));
        if let Err(e) = acc.array.check() {
            return Err(e.to_string());
        }
    }
    // Letters not in the output are summed; a letter of length 1 kept only by broadcast
    // is there already.
    let acc = acc.sum_unless(|l| out.contains(&l));
    let mut result = acc.ordered(&out);
    if result.dtype() == DType::Bool {
        result = result.astype(DType::I64);
    }
    Ok(result)
}

/// The sum of products over `axes.0` of `a` and `axes.1` of `b` (paired in order), as
/// `numpy.tensordot`: the result has `a`'s other axes, then `b`'s.
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let a = array::ones(&[2, 3, 4], &[1, 2, 4]);
///     let b = array::ones(&[4, 3, 5], &[2, 3, 5]);
///     let c = array::tensordot(&a, &b, (&[1, 2], &[1, 0]));
///     assert_eq!(c.shape(), &[2, 5]);
///     assert!(c.compute::<f64>(client).unwrap().iter().all(|&v| v == 12.0));
/// });
/// ```
pub fn tensordot(a: &Array, b: &Array, axes: (&[isize], &[isize])) -> Array {
    for x in [a, b] {
        if x.check().is_err() {
            return x.clone();
        }
    }
    let fail = |why: String| {
        Array::invalid(format!(
            "tensordot of shapes {:?} and {:?} over axes {:?} and {:?}: {why}",
            a.shape(),
            b.shape(),
            axes.0,
            axes.1
        ))
    };
    if axes.0.len() != axes.1.len() {
        return fail("give as many axes of each".into());
    }
    let resolve = |list: &[isize], nd: usize| -> Result<Vec<usize>, String> {
        let mut out = Vec::new();
        for &x in list {
            let axis = super::grid::axis(x, nd)?;
            if out.contains(&axis) {
                return Err(format!("axis {x} is given twice"));
            }
            out.push(axis);
        }
        Ok(out)
    };
    let (xa, xb) = match (resolve(axes.0, a.ndim()), resolve(axes.1, b.ndim())) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    for (&i, &j) in xa.iter().zip(&xb) {
        if a.shape()[i] != b.shape()[j] {
            return fail(format!(
                "axis {i} has length {} and axis {j} {}",
                a.shape()[i],
                b.shape()[j]
            ));
        }
    }
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    if a.ndim() + b.ndim() > letters.len() {
        return fail("more than 52 axes".into());
    }
    let la: Vec<char> = letters[..a.ndim()].to_vec();
    let mut lb: Vec<char> = letters[a.ndim()..a.ndim() + b.ndim()].to_vec();
    for (&i, &j) in xa.iter().zip(&xb) {
        lb[j] = la[i];
    }
    let out: String = (0..a.ndim())
        .filter(|i| !xa.contains(i))
        .map(|i| la[i])
        .chain((0..b.ndim()).filter(|j| !xb.contains(j)).map(|j| lb[j]))
        .collect();
    let spec = format!(
        "{},{}->{out}",
        la.iter().collect::<String>(),
        lb.iter().collect::<String>()
    );
    match einsum_checked(&spec, &[a, b]) {
        Ok(x) => x,
        Err(e) => fail(e),
    }
}

/// The matrix product with NumPy's `matmul` (`@`) rules: 2-D operands are matrices; a
/// 1-D left operand is a row and a 1-D right operand a column (that axis is then
/// dropped); more axes are a stack of matrices, the leading axes broadcast.
///
/// ```
/// use mpidask::array;
/// mpidask::run_local(mpidask::RuntimeArgs::default(), |client| {
///     let stack = array::ones(&[4, 2, 3], &[2, 2, 3]);
///     let m = array::ones(&[3, 5], &[3, 5]);
///     let c = array::matmul(&stack, &m);
///     assert_eq!(c.shape(), &[4, 2, 5]);
///     assert!(c.compute::<f64>(client).unwrap().iter().all(|&v| v == 3.0));
/// });
/// ```
pub fn matmul(a: &Array, b: &Array) -> Array {
    for x in [a, b] {
        if x.check().is_err() {
            return x.clone();
        }
    }
    let (na, nb) = (a.ndim(), b.ndim());
    let inner_a = if na == 0 {
        None
    } else {
        Some(a.shape()[na - 1])
    };
    let inner_b = match nb {
        0 => None,
        1 => Some(b.shape()[0]),
        _ => Some(b.shape()[nb - 2]),
    };
    if inner_a.is_none() || inner_b.is_none() || inner_a != inner_b {
        return Array::invalid(format!(
            "matmul of shapes {:?} and {:?}: the last axis of the first must match the {} \
             of the second (both at least 1-D)",
            a.shape(),
            b.shape(),
            if nb == 1 {
                "only axis"
            } else {
                "second-to-last axis"
            }
        ));
    }
    // Leading (batch) axes broadcast from the right, as NumPy's.
    let batch_a = na.saturating_sub(2);
    let batch_b = nb.saturating_sub(2);
    let batch = batch_a.max(batch_b);
    for k in 0..batch {
        let n = (k < batch_a).then(|| a.shape()[batch_a - 1 - k]);
        let m = (k < batch_b).then(|| b.shape()[batch_b - 1 - k]);
        if let (Some(n), Some(m)) = (n, m)
            && n != m
            && n != 1
            && m != 1
        {
            return Array::invalid(format!(
                "matmul of shapes {:?} and {:?}: the stacks' shapes {:?} and {:?} do not \
                 broadcast",
                a.shape(),
                b.shape(),
                &a.shape()[..batch_a],
                &b.shape()[..batch_b]
            ));
        }
    }
    // Batch letters from 'A', the matrix letters i (rows), k (inner), j (columns).
    let letters: Vec<char> = ('A'..='Z').collect();
    if batch > letters.len() {
        return Array::invalid("matmul: more than 26 stacking axes");
    }
    let all: String = letters[..batch].iter().collect();
    let sa = format!(
        "{}{}",
        &all[batch - batch_a..],
        if na == 1 { "k" } else { "ik" }
    );
    let sb = format!(
        "{}{}",
        &all[batch - batch_b..],
        if nb == 1 { "k" } else { "kj" }
    );
    // A batch letter of length 1 in both operands stays, as NumPy keeps it.
    let out = format!(
        "{all}{}{}",
        if na == 1 { "" } else { "i" },
        if nb == 1 { "" } else { "j" }
    );
    einsum(&format!("{sa},{sb}->{out}"), &[a, b])
}
