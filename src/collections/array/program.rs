//! The fused per-chunk programs that array tasks run: a small list of operations over the
//! chunk's inputs, evaluated on the worker by [`super::kernel`].
//!
//! A program is built on the client for one output chunk. Every node records its shape and
//! element type, and whether its first axis is the *streaming* axis: a program whose root
//! streams is evaluated a few rows at a time (cache-sized blocks), so a chain of elementwise
//! operations, random generation and the first stage of a reduction never hold more than
//! one block of intermediates.

use super::dtype::{DType, Scalar};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A probability distribution for random arrays.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound (excluded).
        high: f64,
    },
    /// Normal with this mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

/// Elementwise operations of one argument.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// Square root.
    Sqrt,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Ln,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// `x^n` for an integer `n`.
    Powi(i32),
    /// `x^p` for a float `p`.
    Powf(f64),
    /// Logical not (booleans).
    Not,
    /// Base-10 logarithm.
    Log10,
    /// Base-2 logarithm.
    Log2,
    /// `ln(1 + x)`, exact for small `x`.
    Log1p,
    /// `e^x - 1`, exact for small `x`.
    Expm1,
    /// Tangent.
    Tan,
    /// Inverse sine.
    Arcsin,
    /// Inverse cosine.
    Arccos,
    /// Inverse tangent.
    Arctan,
    /// Hyperbolic sine.
    Sinh,
    /// Hyperbolic cosine.
    Cosh,
    /// Hyperbolic tangent.
    Tanh,
    /// Largest integer not above (integers unchanged).
    Floor,
    /// Smallest integer not below (integers unchanged).
    Ceil,
    /// Integer part, toward zero (integers unchanged).
    Trunc,
    /// -1, 0 or 1 by sign (NaN stays NaN).
    Sign,
    /// Rounded to this many decimals, halves to even, as NumPy's `round`.
    Round(i32),
    /// Whether NaN (boolean).
    IsNan,
    /// Whether infinite (boolean).
    IsInf,
    /// Whether neither NaN nor infinite (boolean).
    IsFinite,
}

/// Elementwise operations of two arguments (NumPy broadcasting).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (true division: integers give floats).
    Div,
    /// `a < b`.
    Lt,
    /// `a <= b`.
    Le,
    /// `a > b`.
    Gt,
    /// `a >= b`.
    Ge,
    /// `a == b`.
    Eq,
    /// `a != b`.
    Ne,
    /// `a & b` (booleans).
    And,
    /// `a | b` (booleans).
    Or,
    /// The larger, NaN if either is (NumPy's `maximum`).
    Maximum,
    /// The smaller, NaN if either is (NumPy's `minimum`).
    Minimum,
    /// `atan(a / b)` in the quadrant of `(b, a)`.
    Arctan2,
    /// `sqrt(a² + b²)` without overflow.
    Hypot,
    /// `a % b` with the sign of `b`, as Python's and NumPy's `%` (integer `% 0` is 0).
    Rem,
    /// `a // b`, rounded down, as Python's and NumPy's `//` (integer `// 0` is 0).
    FloorDiv,
}

impl BinaryOp {
    /// `true` for comparisons (boolean result).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Eq | BinaryOp::Ne
        )
    }

    /// The element type of the result for operands of these types.
    pub fn result_dtype(self, a: DType, b: DType) -> DType {
        let common = a.promote(b);
        match self {
            _ if self.is_comparison() => DType::Bool,
            BinaryOp::And | BinaryOp::Or => DType::Bool,
            BinaryOp::Div | BinaryOp::Arctan2 | BinaryOp::Hypot => common.float(),
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Rem | BinaryOp::FloorDiv
                if common == DType::Bool =>
            {
                DType::I64
            }
            _ => common,
        }
    }
}

impl UnaryOp {
    /// `true` for operations that map integers to integers of the same type (booleans to
    /// `i64`); the others give floats or booleans.
    pub fn keeps_integers(self) -> bool {
        matches!(
            self,
            UnaryOp::Neg
                | UnaryOp::Abs
                | UnaryOp::Powi(_)
                | UnaryOp::Floor
                | UnaryOp::Ceil
                | UnaryOp::Trunc
                | UnaryOp::Sign
                | UnaryOp::Round(_)
        )
    }

    /// `true` for the tests of a value that give booleans (`isnan`, `isinf`, `isfinite`).
    pub fn is_predicate(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::IsFinite)
    }

    /// The element type of the result for an operand of type `a`.
    pub fn result_dtype(self, a: DType) -> DType {
        match self {
            UnaryOp::Not | UnaryOp::IsNan | UnaryOp::IsInf | UnaryOp::IsFinite => DType::Bool,
            _ if self.keeps_integers() && a == DType::Bool => DType::I64,
            _ if self.keeps_integers() => a,
            _ => a.float(),
        }
    }
}

/// Reductions.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum ReduceOp {
    /// Sum (booleans count).
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Minimum (NaN propagates).
    Min,
    /// Maximum (NaN propagates).
    Max,
    /// Variance with `ddof` delta degrees of freedom.
    Var(u32),
    /// Standard deviation with `ddof`.
    Std(u32),
    /// Any element true.
    Any,
    /// All elements true.
    All,
    /// Index of the first minimum.
    ArgMin,
    /// Index of the first maximum.
    ArgMax,
    /// Number of non-zero elements.
    CountNonzero,
    /// Sum of the elements that are not NaN (0 for none).
    NanSum,
    /// Mean of the elements that are not NaN (NaN for none).
    NanMean,
    /// Minimum of the elements that are not NaN (NaN for none).
    NanMin,
    /// Maximum of the elements that are not NaN (NaN for none).
    NanMax,
    /// Variance of the elements that are not NaN, with `ddof` (NaN for `ddof` or fewer).
    NanVar(u32),
    /// Standard deviation of the elements that are not NaN, with `ddof`.
    NanStd(u32),
    /// Product (integers and booleans in `i64`, wrapping; 1 for none).
    Prod,
}

impl ReduceOp {
    /// The element type of the result for input type `a`.
    pub fn result_dtype(self, a: DType) -> DType {
        match self {
            ReduceOp::Sum | ReduceOp::NanSum | ReduceOp::Prod if !a.is_float() => DType::I64,
            ReduceOp::Sum
            | ReduceOp::Prod
            | ReduceOp::Min
            | ReduceOp::Max
            | ReduceOp::NanSum
            | ReduceOp::NanMin
            | ReduceOp::NanMax => a,
            ReduceOp::Mean
            | ReduceOp::Var(_)
            | ReduceOp::Std(_)
            | ReduceOp::NanMean
            | ReduceOp::NanVar(_)
            | ReduceOp::NanStd(_) => a.float(),
            ReduceOp::Any | ReduceOp::All => DType::Bool,
            ReduceOp::ArgMin | ReduceOp::ArgMax | ReduceOp::CountNonzero => DType::I64,
        }
    }

    /// The reduction that gives the same result on elements of type `dtype`: the plain one
    /// for a NaN-skipping reduction of a type without NaN.
    pub fn for_type(self, dtype: DType) -> ReduceOp {
        if dtype.is_float() {
            return self;
        }
        match self {
            ReduceOp::NanSum => ReduceOp::Sum,
            ReduceOp::NanMean => ReduceOp::Mean,
            ReduceOp::NanMin => ReduceOp::Min,
            ReduceOp::NanMax => ReduceOp::Max,
            ReduceOp::NanVar(d) => ReduceOp::Var(d),
            ReduceOp::NanStd(d) => ReduceOp::Std(d),
            op => op,
        }
    }

    /// `true` for the reductions that skip NaN.
    pub fn skips_nan(self) -> bool {
        matches!(
            self,
            ReduceOp::NanSum
                | ReduceOp::NanMean
                | ReduceOp::NanMin
                | ReduceOp::NanMax
                | ReduceOp::NanVar(_)
                | ReduceOp::NanStd(_)
        )
    }

    /// `true` if the reduction has no value over zero elements (NumPy raises).
    pub fn needs_elements(self) -> bool {
        matches!(
            self,
            ReduceOp::Min | ReduceOp::Max | ReduceOp::ArgMin | ReduceOp::ArgMax
        )
    }

    /// Name as NumPy spells it.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::Var(_) => "var",
            ReduceOp::Std(_) => "std",
            ReduceOp::Any => "any",
            ReduceOp::All => "all",
            ReduceOp::ArgMin => "argmin",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::CountNonzero => "count_nonzero",
            ReduceOp::NanSum => "nansum",
            ReduceOp::NanMean => "nanmean",
            ReduceOp::NanMin => "nanmin",
            ReduceOp::NanMax => "nanmax",
            ReduceOp::NanVar(_) => "nanvar",
            ReduceOp::NanStd(_) => "nanstd",
            ReduceOp::Prod => "prod",
        }
    }
}

/// A range with a step along one axis, in a chunk's local coordinates. `step` is positive;
/// `len` elements are taken from `start`, in reverse order when `reverse` (a negative step).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisSlice {
    /// First index.
    pub start: usize,
    /// Distance between taken indices (>= 1).
    pub step: usize,
    /// Number of indices taken.
    pub len: usize,
    /// Taken from the last to the first.
    pub reverse: bool,
}

impl AxisSlice {
    /// The slices of a region: `(start, len)` per axis, every step 1.
    pub fn of_region(region: &[(usize, usize)]) -> Vec<AxisSlice> {
        region
            .iter()
            .map(|&(start, len)| AxisSlice {
                start,
                step: 1,
                len,
                reverse: false,
            })
            .collect()
    }
}

/// One operation of a program. Operands are earlier nodes, by index.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Op {
    /// The program's `i`-th input chunk.
    Input(usize),
    /// Random values: element `i` (C order) of this chunk is drawn from the counter-based
    /// generator at `(key, i)`.
    Random {
        /// Distribution.
        dist: Distribution,
        /// Generator key of this chunk (from the seed and the chunk's index).
        key: u64,
    },
    /// Every element `value`.
    Fill(Scalar),
    /// `start + (first + i) * step`, 1-D.
    Arange {
        /// Value at global index 0.
        start: f64,
        /// Increment.
        step: f64,
        /// Global index of this chunk's first element.
        first: u64,
    },
    /// A 0-d value.
    Scalar(Scalar),
    /// Elementwise, one operand.
    Unary(UnaryOp, usize),
    /// Elementwise with broadcasting, two operands.
    Binary(BinaryOp, usize, usize),
    /// `cond ? a : b`, with broadcasting.
    Where(usize, usize, usize),
    /// Conversion.
    Cast(DType, usize),
    /// A reduction over axes that lie entirely in this chunk.
    Reduce {
        /// Reduction.
        op: ReduceOp,
        /// Axes of the operand.
        axes: Vec<usize>,
        /// Keep reduced axes with length 1.
        keepdims: bool,
        /// Operand.
        arg: usize,
    },
    /// Axis permutation.
    Transpose(Vec<usize>, usize),
    /// Ranges with steps, one per axis.
    Slice(Vec<AxisSlice>, usize),
    /// New shape with the same number of elements (C order).
    Reshape(Vec<usize>, usize),
    /// A cumulative operation along an axis, within this chunk.
    Scan(ScanOp, usize, usize),
}

/// Cumulative operations along an axis.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanOp {
    /// Running sums (`cumsum`).
    CumSum,
    /// Running products (`cumprod`).
    CumProd,
}

impl ScanOp {
    /// The element type of the result for input type `a`: integers and booleans in `i64`,
    /// as NumPy's default integer.
    pub fn result_dtype(self, a: DType) -> DType {
        if a.is_float() { a } else { DType::I64 }
    }

    /// The operation that joins a running value to the next one.
    pub fn combine(self) -> BinaryOp {
        match self {
            ScanOp::CumSum => BinaryOp::Add,
            ScanOp::CumProd => BinaryOp::Mul,
        }
    }
}

impl Op {
    /// The nodes this operation reads, by index (with repeats). Exhaustive, so a new
    /// operation cannot be left out of the register allocation and use counts that read it.
    pub fn operands(&self) -> Vec<usize> {
        match self {
            Op::Unary(_, a)
            | Op::Cast(_, a)
            | Op::Transpose(_, a)
            | Op::Slice(_, a)
            | Op::Reshape(_, a)
            | Op::Scan(_, _, a) => vec![*a],
            Op::Reduce { arg, .. } => vec![*arg],
            Op::Binary(_, a, b) => vec![*a, *b],
            Op::Where(c, a, b) => vec![*c, *a, *b],
            // Sources: `Input`'s index is the program's input, not a node.
            Op::Input(_) | Op::Random { .. } | Op::Fill(_) | Op::Arange { .. } | Op::Scalar(_) => {
                vec![]
            }
        }
    }
}

/// A node: its operation, shape and element type, and whether its axis 0 streams.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Shape of the node's value for this chunk.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Axis 0 of this node is the program's streaming axis.
    pub streams: bool,
}

/// What a program produces.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Output {
    /// The root's value, a chunk of the result array.
    Store,
    /// The first stage of a cross-chunk reduction of the root over `axes` (kept as length
    /// 1): a partial state to be combined with other chunks'.
    Partial {
        /// Reduction.
        op: ReduceOp,
        /// Axes of the root.
        axes: Vec<usize>,
        /// Global position of this chunk's element 0, for `argmin`/`argmax` indices.
        offset: Vec<usize>,
        /// Shape of the whole array, for flat indices.
        global_shape: Vec<usize>,
    },
}

/// A fused per-chunk program.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Program {
    /// Element types of the input chunks.
    pub inputs: Vec<DType>,
    /// Operations; the last is the root.
    pub nodes: Vec<Node>,
    /// What to produce.
    pub output: Output,
}

impl Program {
    /// The root node.
    pub fn root(&self) -> &Node {
        self.nodes.last().expect("a program has a root")
    }

    /// `true` if the program can be evaluated a few rows at a time.
    pub fn streams(&self) -> bool {
        let root = self.root();
        root.streams && root.shape.first().is_some_and(|&r| r > 0)
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Input(i) => format!("input{i}"),
        Op::Random { dist, .. } => match dist {
            Distribution::Uniform { low, high } => format!("random.uniform({low}, {high})"),
            Distribution::Normal { mean, std } => format!("random.normal({mean}, {std})"),
        },
        Op::Fill(v) => format!("full({})", v.as_f64()),
        Op::Arange { start, step, .. } => format!("arange({start}, step {step})"),
        Op::Scalar(v) => format!("{}", v.as_f64()),
        Op::Unary(u, _) => format!("{u:?}").to_lowercase(),
        Op::Binary(b, _, _) => format!("{b:?}").to_lowercase(),
        Op::Where(..) => "where".into(),
        Op::Cast(d, _) => format!("astype({d})"),
        Op::Reduce { op, axes, .. } => format!("{}(axis={axes:?})", op.name()),
        Op::Transpose(p, _) => format!("transpose{p:?}"),
        Op::Slice(..) => "slice".into(),
        Op::Reshape(s, _) => format!("reshape{s:?}"),
        Op::Scan(op, axis, _) => format!("{op:?}(axis={axis})").to_lowercase(),
    }
}

impl Program {
    /// The operations in order, without shapes or keys: equal for the programs of all
    /// chunks of one array.
    pub fn signature(&self) -> String {
        let mut ops: Vec<String> = self.nodes.iter().map(|n| describe_op(&n.op)).collect();
        ops.push(match &self.output {
            Output::Store => "chunk".into(),
            Output::Partial { op, axes, .. } => format!("partial {}(axis={axes:?})", op.name()),
        });
        ops.join(" -> ")
    }
}

impl fmt::Display for Program {
    /// One line per node: `n3 = mul(n1, n2) f64[1000, 2] streams`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.nodes.iter().enumerate() {
            let args: Vec<String> = match &node.op {
                Op::Unary(_, a) | Op::Cast(_, a) | Op::Transpose(_, a) | Op::Slice(_, a) => {
                    vec![format!("n{a}")]
                }
                Op::Reshape(_, a) | Op::Reduce { arg: a, .. } | Op::Scan(_, _, a) => {
                    vec![format!("n{a}")]
                }
                Op::Binary(_, a, b) => vec![format!("n{a}"), format!("n{b}")],
                Op::Where(c, a, b) => vec![format!("n{c}"), format!("n{a}"), format!("n{b}")],
                _ => vec![],
            };
            writeln!(
                f,
                "    n{i} = {}{} {}{:?}{}",
                describe_op(&node.op),
                if args.is_empty() {
                    String::new()
                } else {
                    format!("({})", args.join(", "))
                },
                node.dtype,
                node.shape,
                if node.streams { " streams" } else { "" }
            )?;
        }
        match &self.output {
            Output::Store => writeln!(f, "    -> chunk"),
            Output::Partial { op, axes, .. } => {
                writeln!(f, "    -> partial {}(axis={axes:?})", op.name())
            }
        }
    }
}
