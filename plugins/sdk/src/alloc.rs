//! The guest's memory allocator: size classes with free lists, over the system allocator.
//! A decision allocates and frees a few dozen small blocks (the request's strings as the
//! host lowers them, targets, the reason), and wasi-libc's dlmalloc spent about 13 % of a
//! 16-node least-loaded decision on them. A block of up to 1 KiB (alignment up to 16) is a
//! pop from or a push onto its class's free list; anything larger goes to the system
//! allocator. Freed small blocks are kept for reuse, never returned: the host caps an
//! instance's memory anyway, and an instance lives for many decisions of the same shape.
//! A policy crate with its own `#[global_allocator]` turns this one off with
//! `default-features = false` on its `switchyard-policy-sdk` dependency. Blocks must be
//! freed with the layout they were allocated with (Rust's contract; dlmalloc forgave a
//! wrong size, this allocator does not).

use std::alloc::Layout;

/// The smallest class: 16 bytes (enough for the free list's link, and the alignment cap).
const MIN_SHIFT: u32 = 4;
/// Classes of 16, 32, ..., 1024 bytes.
const CLASSES: usize = 7;
const MAX_SMALL: usize = 1 << (MIN_SHIFT as usize + CLASSES - 1);
const MAX_ALIGN: usize = 1 << MIN_SHIFT;

/// The class of `layout`, or `None` for the system allocator.
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_SMALL || layout.align() > MAX_ALIGN {
        return None;
    }
    let size = layout.size().max(MAX_ALIGN);
    Some((size.next_power_of_two().trailing_zeros() - MIN_SHIFT) as usize)
}

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics"), feature = "allocator"))]
mod wasm {
    #![allow(unsafe_code)]

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;

    use super::{CLASSES, MAX_ALIGN, MIN_SHIFT, class};

    /// Carved into blocks of one class at a time as the free lists run dry.
    const CHUNK: usize = 64 * 1024;

    struct State {
        free: [*mut u8; CLASSES],
        bump: usize,
        end: usize,
    }

    struct SizeClasses(UnsafeCell<State>);

    // SAFETY: this build has no threads (no `atomics` feature): one thread ever touches it.
    unsafe impl Sync for SizeClasses {}

    #[global_allocator]
    static ALLOCATOR: SizeClasses = SizeClasses(UnsafeCell::new(State {
        free: [std::ptr::null_mut(); CLASSES],
        bump: 0,
        end: 0,
    }));

    unsafe impl GlobalAlloc for SizeClasses {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let Some(c) = class(layout) else {
                // SAFETY: forwarded with the caller's layout.
                return unsafe { System.alloc(layout) };
            };
            // SAFETY: single-threaded, and no allocator call is re-entered from here.
            let state = unsafe { &mut *self.0.get() };
            let head = state.free[c];
            if !head.is_null() {
                // SAFETY: a free block holds the next free block's address in its first word.
                state.free[c] = unsafe { head.cast::<*mut u8>().read() };
                return head;
            }
            let size = 1usize << (c as u32 + MIN_SHIFT);
            if state.end - state.bump < size {
                // SAFETY: a valid, non-zero layout.
                let chunk = unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, MAX_ALIGN)) };
                if chunk.is_null() {
                    return chunk;
                }
                state.bump = chunk as usize;
                state.end = chunk as usize + CHUNK;
            }
            let block = state.bump as *mut u8;
            state.bump += size;
            block
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let Some(c) = class(layout) else {
                // SAFETY: allocated by `System` with this layout (see `alloc`).
                return unsafe { System.dealloc(ptr, layout) };
            };
            // SAFETY: single-threaded; `ptr` is a block of class `c`, at least 16 bytes.
            let state = unsafe { &mut *self.0.get() };
            unsafe { ptr.cast::<*mut u8>().write(state.free[c]) };
            state.free[c] = ptr;
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `GlobalAlloc::realloc`'s contract makes this a valid layout.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            match (class(layout), class(new_layout)) {
                // Still fits its block.
                (Some(old), Some(new)) if old == new => ptr,
                // SAFETY: both sizes belong to the system allocator.
                (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
                _ => {
                    // SAFETY: a fresh block, then a copy of what both can hold.
                    unsafe {
                        let moved = self.alloc(new_layout);
                        if !moved.is_null() {
                            std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                            self.dealloc(ptr, layout);
                        }
                        moved
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_layouts_get_the_smallest_class_that_holds_them_and_large_or_overaligned_none() {
        let layout = |size, align| Layout::from_size_align(size, align).expect("layout");
        assert_eq!(class(layout(0, 1)), Some(0));
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(100, 4)), Some(3));
        assert_eq!(class(layout(1024, 16)), Some(6));
        assert_eq!(class(layout(1025, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }
}
