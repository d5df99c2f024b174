//! The process allocator: glibc's malloc behind a small, bounded cache of freed blocks on each
//! shard thread.
//!
//! # Why
//!
//! A proxied request allocates about 25 blocks in each process (header maps, h2 stream state,
//! boxed futures, a task, hyper's 8 KiB read buffer) and frees them a few hundred microseconds
//! later, usually on the same shard. glibc serves that from its per-thread `tcache` only while a
//! size has at most 7 free blocks parked and only up to 1032 bytes; a shard that completes 100
//! requests in one event-loop turn overflows both, and every overflow goes through the locked
//! arena (`_int_malloc`, `_int_free`, `malloc_consolidate`). Counted with callgrind
//! (`bench/instructions.sh`), that was 21k of 124k instructions per request.
//!
//! mimalloc and jemalloc remove most of it but keep freed memory of their own accord, and both
//! broke the RSS bound of `tests/head_of_line` (a responder with clients that never read). This
//! cache keeps glibc's memory behaviour and adds a bound that can be stated:
//!
//! # How
//!
//! - Sizes up to [`MAX_CACHED`] with an alignment of at most 16 fall into [`CLASSES`] size
//!   classes: 16-byte steps up to 1 KiB, then four steps per power of two. Such a request is
//!   *always* passed to malloc rounded up to its class size, on every thread, so any block of a
//!   class has room for any request of that class, wherever it was allocated.
//! - A shard thread ([`ThreadCache`], held by `shard::runtime::block_on`) keeps the
//!   blocks it frees in one intrusive LIFO list per class, up to [`limit`] blocks
//!   ([`CLASS_BUDGET`] bytes, at least two blocks); the next allocation of that class takes the
//!   most recently freed block, still warm in the cache. Beyond the limit, and on every other
//!   thread, blocks go straight back to malloc.
//! - A block freed on another shard than the one that allocated it joins the freeing shard's
//!   list; every block is a plain malloc block, so whichever thread finally hands it to `free`
//!   is right.
//! - When a shard's runtime ends, or its thread unwinds, [`flush_this_thread`] returns everything
//!   to malloc.
//!
//! The cache therefore holds at most [`THREAD_BOUND`] bytes per shard thread (2.5 MiB),
//! and rounding wastes at most 15 bytes up to 1 KiB and under a quarter of the size above.
//! Everything larger, or more aligned, is malloc's business alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Largest request size the cache handles.
pub const MAX_CACHED: usize = 16 * 1024;
/// Size classes: 64 of 16 bytes up to 1 KiB, then 4 per power of two up to [`MAX_CACHED`].
pub const CLASSES: usize = 64 + 4 * 4;
/// Most bytes one class keeps parked on one thread (but always at least 2 blocks): 2048
/// blocks of 16 bytes, 52 of 624, 4 of 8 KiB. Small blocks come and go in the largest bursts
/// (a few per request, a hundred requests in one event-loop turn) and cost the least to keep.
pub const CLASS_BUDGET: usize = 32 * 1024;
/// Most bytes parked on one thread over all classes.
pub const THREAD_BOUND: usize = thread_bound();

/// The largest alignment the classes serve: glibc's malloc aligns every block to 16 bytes.
const CLASS_ALIGN: usize = 16;

/// The size class of a request, if the cache handles it.
#[inline]
pub fn class_of(size: usize, align: usize) -> Option<usize> {
    if align > CLASS_ALIGN || size > MAX_CACHED {
        return None;
    }
    if size <= 1024 {
        // 1..=16 -> 0, 17..=32 -> 1, ..., 1009..=1024 -> 63 (a zero size never reaches a
        // GlobalAlloc, and would land in class 0 anyway).
        return Some(size.saturating_sub(1) / 16);
    }
    // 2^k < size <= 2^(k+1), k in 10..=13, in four steps of 2^(k-2).
    let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
    let step_shift = k - 2;
    let sub = (size - (1 << k) + (1 << step_shift) - 1) >> step_shift; // 1..=4
    Some(64 + (k - 10) * 4 + sub - 1)
}

/// The size of every block of class `class`.
#[inline]
pub const fn class_size(class: usize) -> usize {
    if class < 64 {
        return (class + 1) * 16;
    }
    let k = 10 + (class - 64) / 4;
    let sub = (class - 64) % 4 + 1;
    (1 << k) + sub * (1 << (k - 2))
}

/// How many blocks of `class` one thread keeps parked.
#[inline]
pub const fn limit(class: usize) -> usize {
    let n = CLASS_BUDGET / class_size(class);
    if n < 2 {
        2
    } else {
        n
    }
}

const fn thread_bound() -> usize {
    let mut total = 0;
    let mut class = 0;
    while class < CLASSES {
        total += limit(class) * class_size(class);
        class += 1;
    }
    total
}

/// One thread's parked blocks. No `Drop`: a thread-local without one costs no registration
/// and no lazy initialisation, which the allocator needs (it must not allocate itself).
struct Cache {
    enabled: Cell<bool>,
    heads: [Cell<*mut u8>; CLASSES],
    counts: [Cell<u16>; CLASSES],
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            enabled: Cell::new(false),
            heads: [const { Cell::new(ptr::null_mut()) }; CLASSES],
            counts: [const { Cell::new(0) }; CLASSES],
        }
    };
}

impl Cache {
    /// The most recently parked block of `class`, if any.
    ///
    /// # Safety
    /// Every pointer in the lists was parked by [`Cache::park`]: a live malloc block of at least
    /// `class_size(class)` bytes whose first word holds the next pointer.
    #[inline]
    unsafe fn take(&self, class: usize) -> Option<*mut u8> {
        let head = self.heads[class].get();
        if head.is_null() {
            return None;
        }
        // SAFETY: `head` is a parked block (see above); its first word is the list link.
        let next = unsafe { head.cast::<*mut u8>().read() };
        self.heads[class].set(next);
        self.counts[class].set(self.counts[class].get() - 1);
        Some(head)
    }

    /// Parks `block` unless this thread does not cache or the class is full.
    ///
    /// # Safety
    /// `block` is a malloc block of at least `class_size(class)` (≥ 16) bytes, 16-aligned, that
    /// nobody uses any more.
    #[inline]
    unsafe fn park(&self, class: usize, block: *mut u8) -> bool {
        let count = self.counts[class].get();
        if !self.enabled.get() || usize::from(count) >= limit(class) {
            return false;
        }
        // SAFETY: the block is ours, large and aligned enough for a pointer.
        unsafe { block.cast::<*mut u8>().write(self.heads[class].get()) };
        self.heads[class].set(block);
        self.counts[class].set(count + 1);
        true
    }
}

/// Turns the cache on for the calling thread (a shard thread, which lives until its runtime
/// ends and then calls [`flush_this_thread`]).
pub fn enable_on_this_thread() {
    CACHE.with(|c| c.enabled.set(true));
}

/// The cache turned on for the calling thread until this is dropped, however the thread's
/// work ends (a panic included).
#[must_use = "the cache is flushed when the guard drops"]
pub struct ThreadCache(());

impl ThreadCache {
    /// Turns the cache on for the calling thread.
    pub fn enable() -> ThreadCache {
        enable_on_this_thread();
        ThreadCache(())
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        flush_this_thread();
    }
}

/// Turns the cache off for the calling thread and hands every parked block back to malloc.
pub fn flush_this_thread() {
    CACHE.with(|c| {
        c.enabled.set(false);
        for class in 0..CLASSES {
            // SAFETY: the lists hold only parked blocks.
            while let Some(block) = unsafe { c.take(class) } {
                // SAFETY: a malloc block that nobody uses; `System` frees with `free`.
                unsafe { System.dealloc(block, class_layout(class)) };
            }
        }
    });
}

/// Bytes parked on the calling thread (for tests and debugging).
pub fn parked_bytes() -> usize {
    CACHE.with(|c| {
        (0..CLASSES)
            .map(|class| usize::from(c.counts[class].get()) * class_size(class))
            .sum()
    })
}

#[inline]
fn class_layout(class: usize) -> Layout {
    // SAFETY: class sizes are multiples of 16, far below isize::MAX; 16 is a power of two.
    unsafe { Layout::from_size_align_unchecked(class_size(class), CLASS_ALIGN) }
}

/// The global allocator of the `rtun` binary (`src/main.rs`).
pub struct ShardAlloc;

// SAFETY: every block comes from `System` (malloc); a block of class c is always at least
// `class_size(c)` bytes and 16-aligned, and is handed out again only for requests of class c.
unsafe impl GlobalAlloc for ShardAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            None => unsafe { System.alloc(layout) },
            Some(class) => match CACHE.with(|c| unsafe { c.take(class) }) {
                Some(block) => block,
                None => unsafe { System.alloc(class_layout(class)) },
            },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout.size(), layout.align()) {
            None => unsafe { System.dealloc(block, layout) },
            Some(class) => {
                if !CACHE.with(|c| unsafe { c.park(class, block) }) {
                    unsafe { System.dealloc(block, class_layout(class)) }
                }
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            None => unsafe { System.alloc_zeroed(layout) },
            // calloc knows when fresh pages are already zero; a parked block would need a memset.
            Some(class) => unsafe { System.alloc_zeroed(class_layout(class)) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class_of(layout.size(), layout.align());
        let new = class_of(new_size, layout.align());
        if old.is_some() && old == new {
            // The block already has its class's size.
            return block;
        }
        if new.is_some() {
            // Growing or shrinking into a cached class: a parked block is cheaper than glibc's
            // realloc, which never takes from its tcache.
            // SAFETY: `new_layout` is valid (a cached size and a power-of-two alignment ≤ 16);
            // both blocks hold at least `min(old, new)` bytes.
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                return moved;
            }
        }
        let old_layout = old.map_or(layout, class_layout);
        // SAFETY: `old_layout` is how the block was really allocated.
        unsafe { System.realloc(block, old_layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_lands_in_the_smallest_class_that_holds_it() {
        let mut last = 0;
        for size in 1..=MAX_CACHED {
            let class = class_of(size, 8).expect("cached size");
            assert!(class < CLASSES, "size {size} -> class {class}");
            assert!(class_size(class) >= size, "size {size} -> class {class}");
            if class > 0 {
                assert!(
                    class_size(class - 1) < size,
                    "size {size} fits a smaller class"
                );
            }
            assert!(class >= last, "classes grow with the size");
            last = class;
        }
        assert_eq!(last, CLASSES - 1);
        for class in 0..CLASSES {
            assert_eq!(class_of(class_size(class), 16), Some(class));
            assert_eq!(class_size(class) % CLASS_ALIGN, 0);
        }
        // Rounding wastes at most 15 bytes up to 1 KiB and under a quarter of the size above.
        for size in 1..=MAX_CACHED {
            let waste = class_size(class_of(size, 1).unwrap_or(0)) - size;
            assert!(
                waste <= 15 || waste * 4 < size,
                "size {size} wastes {waste}"
            );
        }
        assert_eq!(class_of(MAX_CACHED + 1, 8), None);
        assert_eq!(class_of(64, 32), None, "over-aligned requests are malloc's");
    }

    #[test]
    fn the_thread_bound_is_a_few_mebibytes() {
        const { assert!(THREAD_BOUND <= 2600 * 1024) };
        assert_eq!(limit(0), 2048);
        const { assert!(CLASS_BUDGET / 16 <= u16::MAX as usize) };
        assert_eq!(limit(class_of(MAX_CACHED, 1).unwrap_or(0)), 2);
    }

    /// Allocates `n` blocks of `size` through the allocator and frees them all.
    fn churn(size: usize, n: usize) {
        let layout = Layout::from_size_align(size, 8).unwrap_or_else(|e| panic!("{e}"));
        let blocks: Vec<*mut u8> = (0..n)
            .map(|_| unsafe { ShardAlloc.alloc(layout) })
            .collect();
        for &b in &blocks {
            assert!(!b.is_null());
            // The whole class is usable, not only the requested size.
            let class = class_of(size, 8).unwrap_or(0);
            unsafe { ptr::write_bytes(b, 0xA5, class_size(class)) };
        }
        for b in blocks {
            unsafe { ShardAlloc.dealloc(b, layout) };
        }
    }

    #[test]
    fn a_shard_thread_parks_up_to_the_limit_and_flushes_to_nothing() {
        std::thread::spawn(|| {
            churn(100, 10);
            assert_eq!(
                parked_bytes(),
                0,
                "a thread that did not enable the cache parks nothing"
            );
            enable_on_this_thread();
            for size in [1, 24, 100, 624, 1000, 1760, 8192, MAX_CACHED] {
                let class = class_of(size, 8).unwrap_or(0);
                churn(size, limit(class) + 10);
                assert_eq!(
                    CACHE.with(|c| usize::from(c.counts[class].get())),
                    limit(class),
                    "size {size}"
                );
            }
            // Every class at its limit: the bound, and no more.
            for class in 0..CLASSES {
                churn(class_size(class), limit(class) + 3);
            }
            assert_eq!(parked_bytes(), THREAD_BOUND);
            flush_this_thread();
            assert_eq!(parked_bytes(), 0);
            churn(100, 10);
            assert_eq!(parked_bytes(), 0, "flushed means off");
        })
        .join()
        .unwrap_or_else(|_| panic!("cache thread panicked"));
    }

    #[test]
    fn a_freed_block_is_the_next_one_handed_out_and_keeps_nothing_stale() {
        std::thread::spawn(|| {
            enable_on_this_thread();
            let small = Layout::from_size_align(40, 8).unwrap_or_else(|e| panic!("{e}"));
            let same_class = Layout::from_size_align(48, 16).unwrap_or_else(|e| panic!("{e}"));
            unsafe {
                let a = ShardAlloc.alloc(small);
                ShardAlloc.dealloc(a, small);
                let b = ShardAlloc.alloc(same_class);
                assert_eq!(a, b, "LIFO within a class, whatever the exact size");
                assert_eq!(b as usize % 16, 0);
                let z = ShardAlloc.alloc_zeroed(same_class);
                assert!(std::slice::from_raw_parts(z, 48).iter().all(|&x| x == 0));
                ShardAlloc.dealloc(z, same_class);
                ShardAlloc.dealloc(b, same_class);
            }
            flush_this_thread();
        })
        .join()
        .unwrap_or_else(|_| panic!("cache thread panicked"));
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes_and_out_of_them() {
        std::thread::spawn(|| {
            enable_on_this_thread();
            let mut layout = Layout::from_size_align(10, 1).unwrap_or_else(|e| panic!("{e}"));
            unsafe {
                let mut p = ShardAlloc.alloc(layout);
                for i in 0..10 {
                    *p.add(i) = i as u8;
                }
                // Same class: the same block.
                let q = ShardAlloc.realloc(p, layout, 16);
                assert_eq!(p, q);
                layout = Layout::from_size_align(16, 1).unwrap_or_else(|e| panic!("{e}"));
                let mut len = 16;
                for i in 10..16 {
                    *q.add(i) = i as u8;
                }
                p = q;
                // Up through the classes and past the largest one, then back down.
                for new_size in [1000, 1500, 9000, MAX_CACHED + 1, 100_000, 5000, 20] {
                    p = ShardAlloc.realloc(p, layout, new_size);
                    assert!(!p.is_null());
                    for i in len..new_size {
                        *p.add(i) = i as u8;
                    }
                    let keep = len.min(new_size);
                    for i in 0..keep {
                        assert_eq!(*p.add(i), i as u8, "byte {i} after {len} -> {new_size}");
                    }
                    layout = Layout::from_size_align(new_size, 1).unwrap_or_else(|e| panic!("{e}"));
                    len = new_size;
                }
                ShardAlloc.dealloc(p, layout);
            }
            flush_this_thread();
        })
        .join()
        .unwrap_or_else(|_| panic!("cache thread panicked"));
    }

    #[test]
    fn blocks_freed_on_another_shard_are_reused_there() {
        use std::sync::mpsc;
        let (tx, rx) = mpsc::channel::<usize>();
        let layout = Layout::from_size_align(1760, 8).unwrap_or_else(|e| panic!("{e}"));
        let producer = std::thread::spawn(move || {
            enable_on_this_thread();
            for round in 0..200u8 {
                let p = unsafe { ShardAlloc.alloc(layout) };
                unsafe { ptr::write_bytes(p, round, 1760) };
                tx.send(p as usize).unwrap_or_else(|e| panic!("{e}"));
            }
            flush_this_thread();
        });
        let consumer = std::thread::spawn(move || {
            enable_on_this_thread();
            let mut reused = 0;
            let mut kept = Vec::new();
            for (round, p) in rx.iter().enumerate() {
                let p = p as *mut u8;
                let bytes = unsafe { std::slice::from_raw_parts(p, 1760) };
                assert!(bytes.iter().all(|&b| b == round as u8), "round {round}");
                unsafe { ShardAlloc.dealloc(p, layout) };
                // Allocate here too: the block parked by the free above comes back.
                let mine = unsafe { ShardAlloc.alloc(layout) };
                if mine == p {
                    reused += 1;
                }
                kept.push(mine);
            }
            for mine in kept {
                unsafe { ShardAlloc.dealloc(mine, layout) };
            }
            assert_eq!(parked_bytes(), limit(class_of(1760, 8).unwrap_or(0)) * 1792);
            flush_this_thread();
            reused
        });
        producer
            .join()
            .unwrap_or_else(|_| panic!("producer panicked"));
        let reused = consumer
            .join()
            .unwrap_or_else(|_| panic!("consumer panicked"));
        assert_eq!(reused, 200);
    }
}
