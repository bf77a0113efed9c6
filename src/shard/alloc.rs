//! The process's allocator: the system's, counting the bytes it holds.
//!
//! The memory alarm compares this with the watermark, as RabbitMQ's
//! default strategy compares allocated memory: resident memory stays high
//! after a purge (the allocator keeps freed pages), and an alarm read from
//! it never cleared. The count is one relaxed add per allocation; the hot
//! path allocates per batch, not per message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

pub struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HELD.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes the process holds from the allocator now.
pub fn allocated() -> u64 {
    HELD.load(Ordering::Relaxed).max(0) as u64
}

/// Gives the allocator's free pages back to the kernel (after bursts of
/// connections or a purge, resident memory otherwise stays at its peak).
pub fn release_free_memory() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_what_is_held() {
        let before = super::allocated();
        let v: Vec<u8> = Vec::with_capacity(64 << 20);
        let during = super::allocated();
        drop(v);
        let after = super::allocated();
        // Other tests allocate at the same time: compare with margin.
        assert!(during >= before + (60 << 20), "{before} {during}");
        assert!(after + (60 << 20) <= during, "{during} {after}");
    }
}
