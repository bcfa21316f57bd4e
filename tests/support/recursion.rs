//! Tasks that submit tasks, shared by the tests and the benchmarks.

/// Fibonacci where every call of 2 or more submits the two below it from its task
/// (through its task client) and waits for them: a recursion `n - 1` levels deep. Returns
/// `(fib(n), tasks)`.
pub fn fib_tree(n: u32) -> Result<(u64, u64), String> {
    if n < 2 {
        return Ok((u64::from(n), 1));
    }
    let client = mpidask::task_client().map_err(|e| e.to_string())?;
    // Not pure: every call is a task of its own, so the tree has all its tasks.
    let each = client.with_options(mpidask::TaskOptions::default().pure(false));
    let parts = client
        .gather(&[
            each.try_submit(fib_tree, n - 1),
            each.try_submit(fib_tree, n - 2),
        ])
        .map_err(|e| e.to_string())?;
    Ok((parts[0].0 + parts[1].0, parts[0].1 + parts[1].1 + 1))
}
