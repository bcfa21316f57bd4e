//! The process's memory allocator: the system's, asking for transparent huge pages for
//! every large allocation and keeping a few freed large blocks for the next ones (feature
//! `huge-page-allocator`, on by default).
//!
//! A fresh allocation is faulted in (and zeroed) by the kernel on first write. With 4 KiB
//! pages that is 256 faults per MiB; under a hypervisor each costs microseconds, and even
//! with huge pages the kernel's zeroing of memory new to the process (`clear_page_erms`)
//! was 58 % of a 5 GB shuffle's time on the project's virtual machine: a shuffle makes and
//! drops several times its data in temporary buffers (Polars' reordered and decoded
//! frames, encoded values). So this allocator
//!
//! * advises huge pages (`MADV_HUGEPAGE`; Debian's kernels have transparent huge pages in
//!   `madvise` mode) for every allocation of [`HUGE_PAGE_THRESHOLD`] bytes or more,
//!   including those made inside Polars and ndarray, so they are faulted in 2 MiB at a
//!   time;
//! * keeps up to [`CACHE_MAX_BYTES`] (and an eighth of a worker's memory limit, see
//!   [`limit_cache`]) of freed blocks of that size, each at most a quarter of that, at
//!   most [`CACHE_SLOTS`] blocks, the oldest given back first; and hands one out again for
//!   an allocation of at most its size and at least 7/8 of it: memory already faulted in.
//!   [`release_cached`] gives them all back (a worker calls it when memory runs short).
//!
//! Everything else goes to the system allocator unchanged. A program that sets its own
//! `#[global_allocator]` turns the feature off (`default-features = false` and the other
//! features it wants).

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, advising huge pages for large allocations and reusing freed ones.
pub struct HugePageAllocator;

// SAFETY: blocks come from `System` (glibc's malloc) and go back to it with `free`, which
// needs no layout; a kept block is handed out only for a layout it satisfies (size and
// alignment) and only once; the advice changes how the kernel backs memory, never its
// contents.
unsafe impl GlobalAlloc for HugePageAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(kept) = take_kept(layout) {
            return kept;
        }
        // SAFETY: the caller's contract is `System`'s.
        let ptr = unsafe { System.alloc(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(kept) = take_kept(layout) {
            // SAFETY: the block has at least `layout.size()` bytes.
            unsafe { kept.write_bytes(0, layout.size()) };
            return kept;
        }
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        advise(ptr, layout.size());
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE_PAGE_THRESHOLD && keep(ptr) {
            return;
        }
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && new_size >= HUGE_PAGE_THRESHOLD {
            // SAFETY: `ptr` is a live block of this allocator.
            if unsafe { usable_size(ptr) } >= new_size {
                return ptr;
            }
            let wanted = Layout::from_size_align(new_size, layout.align());
            if let Some(kept) = wanted.ok().and_then(take_kept) {
                // SAFETY: both blocks are live and distinct, `kept` has room for the old
                // bytes; the old block is then freed (or kept) with its layout.
                unsafe {
                    std::ptr::copy_nonoverlapping(ptr, kept, layout.size());
                    self.dealloc(ptr, layout);
                }
                return kept;
            }
        }
        // SAFETY: as for `alloc`.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if new_size > layout.size() {
            advise(moved, new_size);
        }
        moved
    }
}

/// The most bytes of freed blocks kept for reuse, unless [`limit_cache`] lowers it.
pub const CACHE_MAX_BYTES: usize = 1 << 30;
/// The most bytes of freed blocks kept now.
static CACHE_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(CACHE_MAX_BYTES);

/// Keeps at most an eighth of `memory_limit` (a worker's) in freed blocks, and at most
/// [`CACHE_MAX_BYTES`]: memory kept for reuse is not counted as the worker's values are.
pub fn limit_cache(memory_limit: u64) {
    let limit = usize::try_from(memory_limit / 8).unwrap_or(usize::MAX);
    CACHE_LIMIT.store(
        limit.min(CACHE_MAX_BYTES),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The most freed blocks kept for reuse.
pub const CACHE_SLOTS: usize = 32;

/// Freed blocks kept for reuse: (address, usable bytes), oldest first.
struct Kept {
    blocks: [(usize, usize); CACHE_SLOTS],
    len: usize,
    bytes: usize,
}

// `std`'s mutex is a futex word: locking it never allocates.
static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Kept {
    blocks: [(0, 0); CACHE_SLOTS],
    len: 0,
    bytes: 0,
});

fn kept() -> std::sync::MutexGuard<'static, Kept> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

impl Kept {
    fn remove(&mut self, index: usize) -> (usize, usize) {
        let block = self.blocks[index];
        self.blocks.copy_within(index + 1..self.len, index);
        self.len -= 1;
        self.bytes -= block.1;
        block
    }
}

/// The bytes glibc's block at `ptr` really has (at least what was asked for).
///
/// # Safety
/// `ptr` must be a live block of glibc's malloc.
unsafe fn usable_size(ptr: *mut u8) -> usize {
    // SAFETY: the caller's contract.
    unsafe { libc::malloc_usable_size(ptr.cast()) }
}

/// A kept block for `layout`: large enough, not more than 1/8 larger, aligned for it.
fn take_kept(layout: Layout) -> Option<*mut u8> {
    let size = layout.size();
    if size < HUGE_PAGE_THRESHOLD {
        return None;
    }
    let mut kept = kept();
    let fits = |&(address, usable): &(usize, usize)| {
        usable >= size && usable - size <= usable / 8 && address % layout.align() == 0
    };
    let index = kept.blocks[..kept.len]
        .iter()
        .enumerate()
        .filter(|(_, b)| fits(b))
        .min_by_key(|(_, b)| b.1)?
        .0;
    Some(kept.remove(index).0 as *mut u8)
}

/// Keeps the freed block at `ptr` for reuse (giving older ones back to make room); `false`
/// if it is too large to keep.
fn keep(ptr: *mut u8) -> bool {
    // SAFETY: `ptr` is being freed, so it is a live block.
    let usable = unsafe { usable_size(ptr) };
    let limit = CACHE_LIMIT.load(std::sync::atomic::Ordering::Relaxed);
    if usable > limit / 4 {
        return false;
    }
    let mut kept = kept();
    while kept.len == CACHE_SLOTS || kept.bytes + usable > limit {
        let (oldest, _) = kept.remove(0);
        // SAFETY: a kept block is owned by the cache alone.
        unsafe { libc::free(oldest as *mut libc::c_void) };
    }
    let len = kept.len;
    kept.blocks[len] = (ptr as usize, usable);
    kept.len += 1;
    kept.bytes += usable;
    true
}

/// Gives every kept block back to the system (memory is needed elsewhere).
pub fn release_cached() {
    let mut kept = kept();
    for &(block, _) in &kept.blocks[..kept.len] {
        // SAFETY: as in `keep`.
        unsafe { libc::free(block as *mut libc::c_void) };
    }
    kept.len = 0;
    kept.bytes = 0;
}

/// Allocations at least this large ask for transparent huge pages and are kept for reuse
/// when freed.
pub const HUGE_PAGE_THRESHOLD: usize = 4 << 20;

/// Asks the kernel to back the 2 MiB-aligned part of `[ptr, ptr + size)` with huge pages
/// when `size` is at least [`HUGE_PAGE_THRESHOLD`] (a hint; a refusal is ignored). Makes
/// no allocation (a raw system call).
fn advise(ptr: *mut u8, size: usize) {
    const HUGE: usize = 2 << 20;
    if size < HUGE_PAGE_THRESHOLD || ptr.is_null() {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + size) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents.
        let _ = unsafe {
            rustix::mm::madvise(
                start as *mut std::ffi::c_void,
                end - start,
                rustix::mm::Advice::LinuxHugepage,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_large_block_is_handed_out_again_for_an_allocation_of_about_its_size() {
        // A size and an alignment no other test asks for, so no other allocation takes it.
        let layout = Layout::from_size_align((6 << 20) + 12345, 4096).unwrap();
        let smaller = Layout::from_size_align(6 << 20, 4096).unwrap();
        // SAFETY: every block is freed once, with the layout it was last allocated with.
        unsafe {
            let first = HugePageAllocator.alloc(layout);
            first.write_bytes(7, layout.size());
            HugePageAllocator.dealloc(first, layout);
            let again = HugePageAllocator.alloc_zeroed(smaller);
            assert_eq!(again, first, "the kept block");
            assert!(
                std::slice::from_raw_parts(again, smaller.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            HugePageAllocator.dealloc(again, smaller);
            let much_smaller = Layout::from_size_align(HUGE_PAGE_THRESHOLD, 4096).unwrap();
            let other = HugePageAllocator.alloc(much_smaller);
            assert_ne!(
                other, first,
                "a block 1/8 larger than asked for is not handed out"
            );
            HugePageAllocator.dealloc(other, much_smaller);
        }
        release_cached();
    }

    #[test]
    fn allocations_of_every_size_work_and_keep_their_contents() {
        for size in [
            1,
            4096,
            HUGE_PAGE_THRESHOLD - 1,
            HUGE_PAGE_THRESHOLD,
            3 * HUGE_PAGE_THRESHOLD,
        ] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            // SAFETY: a non-zero size; every pointer is freed with its layout.
            unsafe {
                let ptr = HugePageAllocator.alloc(layout);
                assert!(!ptr.is_null() && (ptr as usize).is_multiple_of(64));
                ptr.write_bytes(7, size);
                let grown = HugePageAllocator.realloc(ptr, layout, 2 * size);
                assert!(!grown.is_null());
                assert!(
                    std::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|&b| b == 7)
                );
                HugePageAllocator.dealloc(grown, Layout::from_size_align(2 * size, 64).unwrap());
                let zeroed = HugePageAllocator.alloc_zeroed(layout);
                assert!(
                    std::slice::from_raw_parts(zeroed, size)
                        .iter()
                        .all(|&b| b == 0)
                );
                HugePageAllocator.dealloc(zeroed, layout);
            }
        }
    }
}
