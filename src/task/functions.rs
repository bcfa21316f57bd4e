//! Function identity: a task names each function it calls by a [`FnId`] that the client
//! registered before first use ([`Registry`]), and every rank turns an id back into its own
//! address of the function through one function, [`FunctionTable::resolve`], which holds
//! the crate's only conversion of an address into a function pointer.
//!
//! Every rank runs the same executable (checked at start-up), so a function lies at the
//! same distance from a fixed function of the binary on every rank, whatever address-space
//! layout randomisation does: a registration carries that *offset*. It also carries a
//! fingerprint of the function's Rust type (an id resolves only as the type it was
//! registered with) and a check word over both under the job's key, so a registration that
//! was corrupted, or made up without the key, is refused. (The check word is an xxh3 hash
//! seeded with the key, an integrity check rather than a cryptographic signature: the ranks
//! of one job trust each other.)
//!
//! An id that was never registered, a registration whose check fails, and an id resolved as
//! another type are protocol errors: the receiving rank ends the job with exit code 8.

use crate::protocol::{FnId, FunctionMsg, Rank};
use rustc_hash::FxHashMap;

/// A Rust function-pointer type that tasks can call by id (implemented with
/// `fn_pointer!` for each type the runtime calls this way).
///
/// # Safety
/// Implement it only for `fn(...) -> ...` pointer types, each with a `SIGNATURE` of its
/// own: [`FunctionTable::resolve`] turns an address into a value of this type when the
/// registered signature is this one.
pub unsafe trait FnPointer: Copy + Send + Sync + 'static {
    /// A fingerprint of the type: the hash of where it was declared and its name, the same
    /// on every rank of one executable, and computed at compile time.
    const SIGNATURE: u64;
    /// The function's address in this process.
    fn address(self) -> usize;
}

/// Declares function-pointer types as [`FnPointer`]s (each named by an alias, so that the
/// module path and the alias name the type uniquely).
macro_rules! fn_pointer {
    ($($t:ident),* $(,)?) => {
        $(
            // SAFETY: `$t` is a function-pointer type (the macro's contract), and no other
            // type of this module has its name.
            unsafe impl $crate::task::FnPointer for $t {
                const SIGNATURE: u64 = xxhash_rust::const_xxh3::xxh3_64(
                    concat!(module_path!(), "::", stringify!($t)).as_bytes(),
                );
                fn address(self) -> usize {
                    self as usize
                }
            }
        )*
    };
}
pub(crate) use fn_pointer;

/// The fixed function every offset is measured from.
#[inline(never)]
fn anchor() -> u64 {
    // A body of its own, so the linker cannot fold it into another function.
    0x6d70_6964_6173_6b21
}

fn anchor_address() -> usize {
    std::hint::black_box(anchor as fn() -> u64) as usize
}

/// The offset of `f` from the anchor: the same on every rank of the job.
fn offset_of<F: FnPointer>(f: F) -> i64 {
    (f.address() as i64).wrapping_sub(anchor_address() as i64)
}

/// The check word of a registration under the job's `key`.
fn seal(key: u64, id: FnId, offset: i64, signature: u64) -> u64 {
    let mut bytes = [0u8; 20];
    bytes[..4].copy_from_slice(&id.0.to_le_bytes());
    bytes[4..12].copy_from_slice(&offset.to_le_bytes());
    bytes[12..].copy_from_slice(&signature.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, key)
}

/// A new random job key (rank 0 makes it; every rank learns it at start-up).
pub fn new_job_key() -> u64 {
    let mut bytes = [0u8; 8];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        // No entropy source: the time and process still make keys differ between jobs.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return xxhash_rust::xxh3::xxh3_64(
            &[
                now.to_le_bytes(),
                u128::from(std::process::id()).to_le_bytes(),
            ]
            .concat(),
        );
    }
    u64::from_le_bytes(bytes)
}

/// The client's side: the functions it registered, by address (and, for those registered
/// under a name of the caller's, by that name too), and their names.
#[derive(Debug)]
pub struct Registry {
    key: u64,
    /// The first id: 0 for the client, a worker's own base for its task client.
    base: u32,
    ids: FxHashMap<(usize, u64, Option<String>), FnId>,
    names: Vec<String>,
    /// By id: a name of the registration that is the same in every run of this executable
    /// (its offset, type and name), for checkpoints.
    stable: Vec<u128>,
}

impl Registry {
    /// An empty registry for the job with `key`.
    pub fn new(key: u64) -> Self {
        Self::with_base(key, 0)
    }

    /// An empty registry whose ids start at `base` (a task client's,
    /// [`FnId::task_client_base`]).
    pub fn with_base(key: u64, base: u32) -> Self {
        Registry {
            key,
            base,
            ids: FxHashMap::default(),
            names: Vec::new(),
            stable: Vec::new(),
        }
    }

    /// The id of `f`, and its registration if it is new (to send before any task using it).
    /// `name` is asked for once, when `f` is new: a function has one name.
    pub fn id_of<F: FnPointer>(
        &mut self,
        f: F,
        name: impl FnOnce() -> String,
    ) -> (FnId, Option<FunctionMsg>) {
        self.id_for(f, None, name)
    }

    /// The id of `f` under `name`, and its registration if that pair is new: one function
    /// that runs tasks of several kinds (a pipeline's, a shuffle's) is registered once per
    /// kind, so that each kind's tasks carry their own name in logs and traces.
    pub fn id_named<F: FnPointer>(&mut self, f: F, name: &str) -> (FnId, Option<FunctionMsg>) {
        self.id_for(f, Some(name.to_string()), || name.to_string())
    }

    fn id_for<F: FnPointer>(
        &mut self,
        f: F,
        named: Option<String>,
        name: impl FnOnce() -> String,
    ) -> (FnId, Option<FunctionMsg>) {
        let signature = F::SIGNATURE;
        let entry = (f.address(), signature, named);
        if let Some(id) = self.ids.get(&entry) {
            return (*id, None);
        }
        let limit = if self.base == 0 { 1 << 31 } else { 1 << 16 };
        let index = u32::try_from(self.names.len())
            .ok()
            .filter(|&n| n < limit)
            .expect("fewer than 2^31 functions (2^16 in a task client)");
        let id = FnId(self.base + index);
        let offset = offset_of(f);
        let name = name();
        let mut stable = xxhash_rust::xxh3::Xxh3::new();
        stable.update(&offset.to_le_bytes());
        stable.update(&signature.to_le_bytes());
        stable.update(name.as_bytes());
        self.stable.push(stable.digest128());
        self.names.push(name.clone());
        self.ids.insert(entry, id);
        let check = seal(self.key, id, offset, signature);
        (
            id,
            Some(FunctionMsg {
                id,
                offset,
                signature,
                name,
                check,
            }),
        )
    }

    /// The name of the registration `id` that every run of this executable gives it (what
    /// [`FunctionMsg::offset`], its type and its name make), for checkpoints.
    pub fn stable_name(&self, id: FnId) -> Option<u128> {
        id.0.checked_sub(self.base)
            .and_then(|i| self.stable.get(i as usize))
            .copied()
    }

    /// The readable name of `id`.
    pub fn name(&self, id: FnId) -> &str {
        id.0.checked_sub(self.base)
            .and_then(|i| self.names.get(i as usize))
            .map_or("task", String::as_str)
    }
}

/// A rank's table of the functions registered so far (the scheduler's and each worker's).
#[derive(Debug, Clone)]
pub struct FunctionTable {
    key: u64,
    /// The client's registrations, by id.
    entries: Vec<FunctionMsg>,
    /// The task clients' registrations, by worker rank, then index.
    others: FxHashMap<u32, Vec<FunctionMsg>>,
}

impl FunctionTable {
    /// An empty table for the job with `key`.
    pub fn new(key: u64) -> Self {
        FunctionTable {
            key,
            entries: Vec::new(),
            others: FxHashMap::default(),
        }
    }

    fn entry(&self, id: FnId) -> Option<&FunctionMsg> {
        match id.owner() {
            (Rank::CLIENT, index) => self.entries.get(index),
            (rank, index) => self.others.get(&rank.0)?.get(index),
        }
    }

    /// Adds a registration after checking it: its check word, and that its id is the next
    /// one. The error says what is wrong with it.
    pub fn register(&mut self, msg: FunctionMsg) -> Result<(), String> {
        if seal(self.key, msg.id, msg.offset, msg.signature) != msg.check {
            return Err(format!(
                "a registration of {} ({:?}) whose check word does not match the job's key: \
                 corrupted or not made by this job's client",
                msg.id, msg.name
            ));
        }
        let (owner, index) = msg.id.owner();
        let list = if owner == Rank::CLIENT {
            &mut self.entries
        } else {
            self.others.entry(owner.0).or_default()
        };
        if index != list.len() {
            let next = msg.id.0 as usize - index + list.len();
            return Err(format!(
                "a registration of {} ({:?}) where function id {next} comes next",
                msg.id, msg.name,
            ));
        }
        list.push(msg);
        Ok(())
    }

    /// `true` if `id` was registered.
    pub fn contains(&self, id: FnId) -> bool {
        self.entry(id).is_some()
    }

    /// The first of `ids` that was never registered.
    pub fn first_unknown(&self, mut ids: impl Iterator<Item = FnId>) -> Option<FnId> {
        ids.find(|id| !self.contains(*id))
    }

    /// The readable name of `id` (`task` for an unknown one).
    pub fn name(&self, id: FnId) -> &str {
        self.entry(id).map_or("task", |e| e.name.as_str())
    }

    /// This rank's address of the function registered as `id`, as the function-pointer type
    /// `F`. An error if `id` was never registered or was registered as another type.
    pub fn resolve<F: FnPointer>(&self, id: FnId) -> Result<F, String> {
        let entry = self
            .entry(id)
            .ok_or_else(|| format!("{id} was never registered"))?;
        if entry.signature != F::SIGNATURE {
            return Err(format!(
                "{id} ({}) was registered as another kind of function than {}",
                entry.name,
                std::any::type_name::<F>()
            ));
        }
        let address = anchor_address().wrapping_add(entry.offset as usize);
        // SAFETY: the entry passed `register`: its check word proves that this job's client
        // made it (the key never leaves the job), and the client takes offsets only with
        // `offset_of` of a value of type `F` (the signature matches `F`) in this same
        // executable (every rank runs the same one, checked at start-up). So `address` is
        // the address of a function of type `F` here, and `F` is a function-pointer type
        // of the size of an address (the `FnPointer` contract).
        Ok(unsafe { std::mem::transmute_copy::<usize, F>(&address) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Unary = fn(u64) -> u64;
    type Binary = fn(u64, u64) -> u64;
    super::fn_pointer!(Unary, Binary);

    fn double(x: u64) -> u64 {
        2 * x
    }
    fn add(a: u64, b: u64) -> u64 {
        a + b
    }

    #[test]
    fn registered_functions_resolve_as_their_type_only() {
        let key = new_job_key();
        let mut registry = Registry::new(key);
        let (d, msg_d) = registry.id_of(double as Unary, || "double".into());
        let (a, msg_a) = registry.id_of(add as Binary, || "add".into());
        assert_eq!((d, a), (FnId(0), FnId(1)));
        assert_eq!(
            registry.id_of(double as Unary, || unreachable!()),
            (d, None)
        );
        assert_eq!(registry.name(a), "add");
        // Named registrations: one id per (function, name), each with its name.
        let (first, msg_first) = registry.id_named(double as Unary, "first kind");
        let (second, msg_second) = registry.id_named(double as Unary, "second kind");
        assert!(msg_first.is_some() && msg_second.is_some());
        assert!(first != second && first != d);
        assert_eq!(
            registry.id_named(double as Unary, "first kind"),
            (first, None)
        );
        assert_eq!(
            (registry.name(first), registry.name(second)),
            ("first kind", "second kind")
        );
        let mut table = FunctionTable::new(key);
        table.register(msg_d.unwrap()).unwrap();
        table.register(msg_a.unwrap()).unwrap();
        table.register(msg_first.unwrap()).unwrap();
        table.register(msg_second.unwrap()).unwrap();
        assert_eq!(table.resolve::<Unary>(second).unwrap()(4), 8);
        assert_eq!(table.resolve::<Unary>(d).unwrap()(21), 42);
        assert_eq!(table.resolve::<Binary>(a).unwrap()(2, 3), 5);
        let wrong = table.resolve::<Binary>(d).unwrap_err();
        assert!(wrong.contains("another kind of function"), "{wrong}");
        assert!(
            table
                .resolve::<Unary>(FnId(4))
                .unwrap_err()
                .contains("never registered")
        );
        assert_eq!(
            table.first_unknown([d, FnId(9), a].into_iter()),
            Some(FnId(9))
        );
    }

    #[test]
    fn forged_and_corrupted_registrations_are_refused() {
        let key = new_job_key();
        let mut registry = Registry::new(key);
        let (_, msg) = registry.id_of(double as Unary, || "double".into());
        let msg = msg.unwrap();
        // Another job's key, a moved offset, a changed type, an id out of order.
        let mut other_job = FunctionTable::new(key ^ 1);
        assert!(other_job.register(msg.clone()).is_err());
        let mut table = FunctionTable::new(key);
        let moved = FunctionMsg {
            offset: msg.offset + 16,
            ..msg.clone()
        };
        assert!(table.register(moved).unwrap_err().contains("check word"));
        let retyped = FunctionMsg {
            signature: Binary::SIGNATURE,
            ..msg.clone()
        };
        assert!(table.register(retyped).is_err());
        let (_, second) = registry.id_of(add as Binary, || "add".into());
        assert!(
            table
                .register(second.unwrap())
                .unwrap_err()
                .contains("comes next")
        );
        table.register(msg).unwrap();
        assert!(table.contains(FnId(0)) && !table.contains(FnId(1)));
    }

    #[test]
    fn task_clients_register_in_their_own_ranges() {
        let key = new_job_key();
        let mut client = Registry::new(key);
        let base = FnId::task_client_base(Rank(4)).unwrap();
        let mut worker = Registry::with_base(key, base);
        let (w, msg_w) = worker.id_of(double as Unary, || "double".into());
        let (c, msg_c) = client.id_of(add as Binary, || "add".into());
        assert_eq!((w, c), (FnId(base), FnId(0)));
        assert_eq!(worker.name(w), "double");
        assert_eq!(worker.name(FnId(0)), "task");
        let mut table = FunctionTable::new(key);
        // Either order: the ranges are counted apart.
        table.register(msg_w.unwrap()).unwrap();
        table.register(msg_c.unwrap()).unwrap();
        assert_eq!(table.resolve::<Unary>(w).unwrap()(5), 10);
        assert_eq!(table.resolve::<Binary>(c).unwrap()(2, 3), 5);
        assert_eq!(table.name(w), "double");
        assert!(!table.contains(FnId(base + 1)));
        let (_, skipped) = worker.id_of(add as Binary, || "add".into());
        let (_, third) = worker.id_named(add as Binary, "third");
        let problem = table.register(third.unwrap()).unwrap_err();
        assert!(
            problem.contains(&format!("{} comes next", base + 1)),
            "{problem}"
        );
        table.register(skipped.unwrap()).unwrap();
    }
}
