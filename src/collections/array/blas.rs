//! The machine's BLAS (OpenBLAS, `libopenblas-dev`), which `ndarray`'s matrix products
//! call for `f32` and `f64` blocks: linked here, and held to one thread, since every worker
//! already runs as many task threads as it has cores.

use std::ffi::c_int;
use std::sync::Once;

#[link(name = "openblas")]
unsafe extern "C" {
    fn openblas_set_num_threads(threads: c_int);
}

/// Makes BLAS calls run on the calling thread alone (once per process).
pub(crate) fn one_thread() {
    static ONCE: Once = Once::new();
    // SAFETY: OpenBLAS's documented setter, called once, before any product.
    ONCE.call_once(|| unsafe { openblas_set_num_threads(1) });
}
