//! The heap in use, counted at the allocator: what a leak grows, apart
//! from what the C allocator keeps.
//!
//! The resident set cannot tell a leak from fragmentation. glibc gives
//! each thread that allocates an arena of its own and returns a freed
//! page only when nothing is left on it, so after 200 pods come and go
//! the anonymous memory of the node agent is a few hundred kB above where
//! it was, a little more each time, while everything the pods used has
//! been freed. Counting bytes at the allocator says which it is, in
//! production as in the churn test: `mtuvisor_heap_bytes` beside the
//! process's resident set.
//!
//! The binary installs [`Counting`] as its global allocator; one relaxed
//! atomic add per allocation and per free, on one counter that two cores
//! share. Code that does not install it (the library's unit tests) reads
//! zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes allocated and not yet freed, as callers asked for them (the
/// allocator's own overhead is not in it).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counted.
pub struct Counting;

// SAFETY: every call goes to `System` unchanged; the counter is a side
// effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both moves, as one: the counter never dips below the truth
            // on the way, and never wraps.
            if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

/// Heap bytes in use now (0 without [`Counting`] installed).
pub fn in_use() -> usize {
    LIVE.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter follows a block through alloc, grow, shrink and free,
    /// called directly (the test binary's own allocator is not this one).
    #[test]
    fn counts_what_is_allocated_and_not_freed() {
        let before = in_use();
        let layout = Layout::from_size_align(4096, 8).unwrap();
        unsafe {
            let p = Counting.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(in_use() - before, 4096);
            let p = Counting.realloc(p, layout, 10_000);
            assert_eq!(in_use() - before, 10_000);
            let grown = Layout::from_size_align(10_000, 8).unwrap();
            let p = Counting.realloc(p, grown, 100);
            assert_eq!(in_use() - before, 100);
            Counting.dealloc(p, Layout::from_size_align(100, 8).unwrap());
            let z = Counting.alloc_zeroed(layout);
            assert_eq!(*z.add(4095), 0);
            assert_eq!(in_use() - before, 4096);
            Counting.dealloc(z, layout);
        }
        assert_eq!(in_use(), before);
    }
}
