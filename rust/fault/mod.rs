//! File mappings cut short under a reader: zeros and a flag instead of a dead process.
//!
//! A read past the new end of a mapped file raises SIGBUS, whose default action kills the
//! process. No check before a kernel call can rule that out: another process may truncate the
//! file while the call runs. So the ranges given to [`watch`] get a process-wide SIGBUS handler:
//! a fault inside one maps anonymous zero pages over the range from the faulting page on, marks
//! the range, and the read re-runs on the zeros. The caller asks [`faulted`] once the reads are
//! done and throws away whatever was computed from them. Any other SIGBUS goes to the handler
//! that was there before ours, or gets the default action.
//!
//! Windows refuses to cut a mapped file short, so there the table is kept but no handler exists.
//!
//! The handler may run on any thread at any moment, so it only reads atomics: a table of slots
//! (each a seqlock over its range) in chunks that are never freed, and the previous action.

use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicUsize, Ordering};

const CHUNK: usize = 256;

struct Slot {
    used: AtomicBool, // claimed by a watch; only watch and unwatch touch it
    seq: AtomicUsize, // odd while start/end change, so the handler skips a half-written range
    start: AtomicUsize,
    end: AtomicUsize,
    faulted: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            used: AtomicBool::new(false),
            seq: AtomicUsize::new(0),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            faulted: AtomicBool::new(false),
        }
    }

    /// Set the range (the caller owns the slot); returns the new, even sequence number.
    fn publish(&self, start: usize, end: usize) -> usize {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.faulted.store(false, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
        seq + 2
    }

    /// The range as one consistent pair, or None while it changes (signal-safe: no waiting).
    #[cfg(unix)]
    fn range(&self) -> Option<(usize, usize)> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            return None;
        }
        let range = (
            self.start.load(Ordering::Relaxed),
            self.end.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then_some(range)
    }
}

struct Chunk {
    slots: [Slot; CHUNK],
    next: AtomicPtr<Chunk>,
}

static FIRST: Chunk = Chunk {
    slots: [const { Slot::new() }; CHUNK],
    next: AtomicPtr::new(std::ptr::null_mut()),
};

fn chunks() -> impl Iterator<Item = &'static Chunk> {
    // SAFETY: chunks are leaked, so a non-null `next` always points to a live Chunk.
    std::iter::successors(Some(&FIRST), |c| unsafe {
        c.next.load(Ordering::Acquire).as_ref()
    })
}

/// A token names a slot and the sequence number its watch published: a stale token (the slot
/// since unwatched or reused) matches nothing.
fn token(index: usize, seq: usize) -> u64 {
    (seq as u64) << 32 | index as u64
}

fn slot_of(token: u64) -> Option<&'static Slot> {
    let index = (token & 0xffff_ffff) as usize;
    let slot = chunks().nth(index / CHUNK)?.slots.get(index % CHUNK)?;
    let live = slot.used.load(Ordering::Acquire)
        && slot.seq.load(Ordering::Acquire) as u32 == (token >> 32) as u32;
    live.then_some(slot)
}

/// Watch `len` bytes at `start` until [`unwatch`]: a read of them that faults (their file was
/// cut short) reads zeros from then on and marks the watch, instead of killing the process.
/// Returns the token naming the watch.
///
/// # Safety
///
/// The range must lie within one read-only file mapping that stays mapped until [`unwatch`]:
/// after a fault the handler replaces its pages from the faulting one on.
pub unsafe fn watch(start: *const u8, len: usize) -> std::io::Result<u64> {
    #[cfg(unix)]
    handler::install()?;
    let end = (start as usize).saturating_add(len);
    let (mut chunk, mut first) = (&FIRST, 0);
    loop {
        for (i, slot) in chunk.slots.iter().enumerate() {
            let free = slot
                .used
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed);
            if free.is_ok() {
                let seq = slot.publish(start as usize, end);
                return Ok(token(first + i, seq));
            }
        }
        chunk = grow(chunk);
        first += CHUNK;
    }
}

/// The chunk after `chunk`, appended if there is none yet.
fn grow(chunk: &'static Chunk) -> &'static Chunk {
    let next = chunk.next.load(Ordering::Acquire);
    // SAFETY: chunks are leaked, so a non-null `next` always points to a live Chunk.
    if let Some(next) = unsafe { next.as_ref() } {
        return next;
    }
    let fresh: &'static mut Chunk = Box::leak(Box::new(Chunk {
        slots: [const { Slot::new() }; CHUNK],
        next: AtomicPtr::new(std::ptr::null_mut()),
    }));
    let fresh: *mut Chunk = fresh;
    match chunk.next.compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: `fresh` was leaked above and is now reachable from the table for good.
        Ok(_) => unsafe { &*fresh },
        Err(winner) => {
            // SAFETY: another thread appended first; `fresh` was never shared, so it is freed
            // here, and `winner` is a leaked chunk.
            unsafe {
                drop(Box::from_raw(fresh));
                &*winner
            }
        }
    }
}

/// Whether a read of the watched range faulted (and read zeros) since [`watch`]; None for a
/// token that names no live watch.
pub fn faulted(token: u64) -> Option<bool> {
    slot_of(token).map(|s| s.faulted.load(Ordering::Acquire))
}

/// End the watch; returns whether it faulted, as [`faulted`]. Call it before the range is
/// unmapped.
pub fn unwatch(token: u64) -> Option<bool> {
    let slot = slot_of(token)?;
    let faulted = slot.faulted.load(Ordering::Acquire);
    slot.publish(0, 0);
    slot.used.store(false, Ordering::Release);
    Some(faulted)
}

#[cfg(unix)]
mod handler;

#[cfg(all(test, unix))]
mod tests;
