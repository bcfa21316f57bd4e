//! Pure tasks (Dask's `pure=True`, the default): a call of the same function with the same
//! arguments while a future of the first call lives gives that future again, and runs
//! nothing more.
//!
//! A call is named by a 128-bit hash of what defines it: the function (its id in this
//! client's table, which names the function and its argument types), the functions it
//! calls, each argument (the encoded bytes of a value, the key of a future), and the
//! options that say where and whether it runs (pinned workers, resources, retries, the
//! workers of an MPI task). Only the priority is left out. (Dask leaves every option out of
//! a key, so there a call pinned to another worker is the first call: a loop pinning one
//! call to each worker runs it once. Here it runs on each.) The table holds futures
//! weakly, so it never keeps a key alive: once the last clone of a future is dropped the
//! same call is a new task.
//!
//! The hash is XXH3-128 by `twox-hash`, which picks AVX2 at run time where the CPU has it:
//! twice the speed of an SSE2 build on this project's machine (35 to 45 GB/s against 16 to
//! 20, an 8 MB value), and a map over large values hashes every byte of them.

use super::args::CallArg;
use super::future::{Future, WeakKey};
use crate::protocol::{Bytes, FnId, Key, TaskOptions};
use rustc_hash::FxHashMap;
use twox_hash::XxHash3_128 as Xxh3;

/// What names a call: a hash of its function and arguments.
pub(super) type Content = u128;

/// The name of a call of `func` (which calls `uses`) with `args` and `options`.
pub(super) fn content(
    func: FnId,
    uses: &[FnId],
    options: &TaskOptions,
    args: &[CallArg],
) -> Content {
    let uses: Vec<u128> = uses.iter().map(|f| u128::from(f.0)).collect();
    hash_call(u128::from(func.0), &uses, options, args, |future| {
        Some(u128::from(future.0))
    })
    .expect("every future has a key")
}

/// The name of a call that every run of the same executable gives it, for checkpoints:
/// [`content`] with functions named by their stable names and futures by the stable names
/// of what made them (`stable_of`); `None` if an argument is a future without one.
pub(super) fn stable_content(
    func: u128,
    options: &TaskOptions,
    args: &[CallArg],
    stable_of: impl Fn(Key) -> Option<u128>,
) -> Option<Content> {
    hash_call(func, &[], options, args, stable_of)
}

/// The stable name of a scattered value: its bytes.
pub(super) fn scattered_content(bytes: &Bytes) -> Content {
    let mut hasher = Xxh3::new();
    hasher.write(b"scatter");
    update_with(&mut hasher, bytes);
    hasher.finish_128()
}

/// Hashes `bytes` (a split value piece by piece, never joined).
fn update_with(hasher: &mut Xxh3, bytes: &Bytes) {
    match bytes.pieces() {
        Some((head, body)) => {
            hasher.write(head);
            hasher.write(body);
        }
        None => hasher.write(bytes),
    }
}

fn hash_call(
    func: u128,
    uses: &[u128],
    options: &TaskOptions,
    args: &[CallArg],
    future_name: impl Fn(Key) -> Option<u128>,
) -> Option<Content> {
    let mut hasher = Xxh3::new();
    hasher.write(&func.to_le_bytes());
    hasher.write(&(uses.len() as u64).to_le_bytes());
    for f in uses {
        hasher.write(&f.to_le_bytes());
    }
    let placement = TaskOptions {
        priority: 0,
        ..options.clone()
    };
    let placement = bincode::serialize(&placement).expect("task options always encode");
    hasher.write(&(placement.len() as u64).to_le_bytes());
    hasher.write(&placement);
    hasher.write(&(args.len() as u64).to_le_bytes());
    for arg in args {
        match arg {
            CallArg::Value(bytes) => {
                hasher.write(&[0]);
                hasher.write(&(bytes.len() as u64).to_le_bytes());
                hasher.write(bytes);
            }
            // The same name as the value encoded in one piece.
            CallArg::Large(bytes) => {
                hasher.write(&[0]);
                hasher.write(&(bytes.len() as u64).to_le_bytes());
                update_with(&mut hasher, bytes);
            }
            CallArg::Future(future) => {
                hasher.write(&[1]);
                hasher.write(&future_name(future.key())?.to_le_bytes());
            }
            CallArg::Futures(futures) => {
                hasher.write(&[2]);
                hasher.write(&(futures.len() as u64).to_le_bytes());
                for future in futures {
                    hasher.write(&future_name(future.key())?.to_le_bytes());
                }
            }
        }
    }
    Some(hasher.finish_128())
}

/// The live futures of pure calls, by name.
#[derive(Default)]
pub(super) struct PureTable {
    futures: FxHashMap<Content, WeakKey>,
    /// Entries after the last sweep of dead ones: the next sweep comes at twice as many.
    swept: usize,
}

impl PureTable {
    /// The live future of the call named `content`, if any. (Call it under the client's
    /// lock and drop the lock before the future: dropping a future takes the lock.)
    pub(super) fn get<T>(&self, content: Content) -> Option<Future<T>> {
        self.futures.get(&content).and_then(WeakKey::upgrade)
    }

    /// Records `future` as the call named `content`; now and then forgets the dead ones,
    /// so the table stays within twice the live futures (plus 1,024).
    pub(super) fn insert<T>(&mut self, content: Content, future: &Future<T>) {
        if self.futures.len() >= 2 * self.swept.max(512) {
            self.futures.retain(|_, weak| weak.alive());
            self.swept = self.futures.len();
        }
        self.futures.insert(content, future.weak());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are XXH3-128, the same as the reference implementation's streaming hash
    /// gives, however the bytes are cut into writes (small pieces and a large value).
    #[test]
    fn names_are_xxh3_128_of_what_was_written() {
        let large: Vec<u8> = (0..3_000_017u32).map(|i| (i * 7 + 3) as u8).collect();
        let pieces: [&[u8]; 5] = [b"scatter", &[0], &8u64.to_le_bytes(), &large, b"tail"];
        let mut ours = Xxh3::new();
        let mut reference = xxhash_rust::xxh3::Xxh3::new();
        for piece in pieces {
            ours.write(piece);
            reference.update(piece);
        }
        assert_eq!(ours.finish_128(), reference.digest128());
        assert_eq!(Xxh3::oneshot(&large), xxhash_rust::xxh3::xxh3_128(&large));
    }

    #[test]
    fn calls_differ_by_function_placement_and_each_argument() {
        let args =
            |a: &[u8], b: &[u8]| vec![CallArg::Value(a.to_vec()), CallArg::Value(b.to_vec())];
        let plain = TaskOptions::default();
        let base = content(FnId(1), &[], &plain, &args(b"ab", b"c"));
        assert_eq!(base, content(FnId(1), &[], &plain, &args(b"ab", b"c")));
        // The boundary between arguments counts: "ab", "c" is not "a", "bc".
        assert_ne!(base, content(FnId(1), &[], &plain, &args(b"a", b"bc")));
        assert_ne!(base, content(FnId(2), &[], &plain, &args(b"ab", b"c")));
        assert_ne!(
            base,
            content(FnId(1), &[FnId(3)], &plain, &args(b"ab", b"c"))
        );
        for other in [
            plain.clone().workers([2]),
            plain.clone().workers([3]),
            plain.clone().retries(1),
            plain.clone().resource("gpu", 1.0),
            TaskOptions {
                mpi_workers: Some(2),
                ..TaskOptions::default()
            },
        ] {
            assert_ne!(
                base,
                content(FnId(1), &[], &other, &args(b"ab", b"c")),
                "{other:?}"
            );
        }
        // The priority only orders tasks.
        assert_eq!(
            base,
            content(FnId(1), &[], &plain.priority(5), &args(b"ab", b"c"))
        );
    }
}
