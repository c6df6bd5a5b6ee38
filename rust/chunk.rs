//! The unit of parallel work: a contiguous piece of one tensor with its survivors and output mask.
//!
//! Chunks are listed in (tensor order, flat index) order, so visiting them in list order visits
//! weights in the global tie order. Each owns a disjoint `&mut` slice of one output mask, which
//! lets rayon write masks in parallel without locks.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::magnitude::{Key, KeyVisitor, Weights};

/// Elements per chunk: large enough that rayon's per-task cost is noise, small enough that the
/// two cores of a small machine still balance on a ~25 M-weight model.
pub const CHUNK: usize = 1 << 16;

pub struct Chunk<'a> {
    /// Position of the tensor in the caller's list (for error messages and tie order).
    pub tensor: usize,
    /// Position of the chunk's first element within its tensor.
    pub start: usize,
    pub weights: Weights<'a>,
    /// Survivors so far (`None`: every weight is alive). Nonzero byte = alive.
    pub alive: Option<&'a [u8]>,
    /// The chunk's output mask; empty for passes that write none ([`split_read`]).
    pub out: &'a mut [u8],
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK]);
}

/// `f` over this thread's chunk-sized byte scratch, its first `len` bytes (`len <= CHUNK`): a
/// chunk's mask that nobody keeps, or a copy of its survivors, stays in cache where a buffer
/// the size of the model would be written out to memory. `f` must not reach rayon (a job
/// stolen meanwhile could ask for the scratch again).
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with_borrow_mut(|scratch| f(&mut scratch[..len]))
}

/// `f` over every item, in parallel only when `parallel` (small inputs stay on the caller's
/// thread: see [`crate::select::PARALLEL_MIN`]).
pub fn map<T: Send, R: Send>(
    items: &mut [T],
    parallel: bool,
    f: impl Fn(&mut T) -> R + Send + Sync,
) -> Vec<R> {
    if parallel {
        items.par_iter_mut().map(f).collect()
    } else {
        items.iter_mut().map(f).collect()
    }
}

/// Chunks per parallel job when a pass keeps one accumulator per job (candidate counts, a
/// histogram): a few jobs per thread, so the accumulators stay few whatever the chunk count.
pub fn per_job(chunks: usize) -> usize {
    chunks.div_ceil(4 * rayon::current_num_threads()).max(1)
}

/// Split every tensor into chunks of at most [`CHUNK`] elements, in global tie order.
pub fn split<'a>(
    weights: &[Weights<'a>],
    alive: Option<&[&'a [u8]]>,
    out: &'a mut [&mut [u8]],
) -> Vec<Chunk<'a>> {
    let mut chunks = Vec::new();
    for (tensor, (w, out_t)) in weights.iter().zip(out.iter_mut()).enumerate() {
        let out_t: &'a mut [u8] = out_t;
        for (c, out_c) in out_t.chunks_mut(CHUNK).enumerate() {
            let start = c * CHUNK;
            let end = start + out_c.len();
            chunks.push(Chunk {
                tensor,
                start,
                weights: w.slice(start, end),
                alive: alive.map(|m| &m[tensor][start..end]),
                out: out_c,
            });
        }
    }
    chunks
}

/// Chunks of the weights alone, in global tie order, for passes that write no mask.
pub fn split_read<'a>(weights: &[Weights<'a>], alive: Option<&[&'a [u8]]>) -> Vec<Chunk<'a>> {
    let mut chunks = Vec::new();
    for (tensor, w) in weights.iter().enumerate() {
        for start in (0..w.len()).step_by(CHUNK) {
            let end = (start + CHUNK).min(w.len());
            chunks.push(Chunk {
                tensor,
                start,
                weights: w.slice(start, end),
                alive: alive.map(|m| &m[tensor][start..end]),
                out: &mut [],
            });
        }
    }
    chunks
}

/// Applies `f` to a chunk's keys with the survivor test specialised away when every weight is
/// alive, so that the common first-round loop carries no mask reads.
pub trait AliveVisitor<K> {
    type Output;
    fn visit<T: Copy, F: Fn(T) -> K + Copy, A: Alive>(
        self,
        bits: &[T],
        key: F,
        alive: A,
    ) -> Self::Output;
}

/// Survivor lookup, either a mask slice or "all alive".
pub trait Alive: Copy {
    fn get(self, i: usize) -> bool;
    /// The survivors of elements `start..start + len`.
    fn window(self, start: usize, len: usize) -> Self;
    /// Zero `out[i]` where element `i` is dead; returns bit `i` set for each alive element
    /// (`out.len() <= 32`).
    fn clear_dead(self, out: &mut [u8]) -> u32;
}

#[derive(Clone, Copy)]
pub struct AllAlive;

impl Alive for AllAlive {
    #[inline(always)]
    fn get(self, _i: usize) -> bool {
        true
    }
    #[inline(always)]
    fn window(self, _start: usize, _len: usize) -> Self {
        self
    }
    #[inline(always)]
    fn clear_dead(self, out: &mut [u8]) -> u32 {
        debug_assert!((1..=32).contains(&out.len()));
        u32::MAX >> (32 - out.len())
    }
}

impl Alive for &[u8] {
    #[inline(always)]
    fn get(self, i: usize) -> bool {
        self[i] != 0
    }
    #[inline(always)]
    fn window(self, start: usize, len: usize) -> Self {
        &self[start..start + len]
    }
    #[inline(always)]
    fn clear_dead(self, out: &mut [u8]) -> u32 {
        let mut bits = 0u32;
        for (i, (o, &m)) in out.iter_mut().zip(self).enumerate() {
            let alive = m != 0;
            *o &= alive as u8;
            bits |= (alive as u32) << i;
        }
        bits
    }
}

struct WithAlive<'m, V> {
    alive: Option<&'m [u8]>,
    inner: V,
}

impl<K, V: AliveVisitor<K>> KeyVisitor<K> for WithAlive<'_, V> {
    type Output = V::Output;
    #[inline(always)]
    fn visit<T: Copy + Send + Sync, F: Fn(T) -> K + Copy + Send + Sync>(
        self,
        bits: &[T],
        key: F,
    ) -> V::Output {
        match self.alive {
            Some(m) => self.inner.visit(bits, key, &m[..bits.len()]),
            None => self.inner.visit(bits, key, AllAlive),
        }
    }
}

/// Visit a chunk's weights as keys in `K`'s space, together with its survivors.
#[inline(always)]
pub fn visit<K: Key, V: AliveVisitor<K>>(
    weights: Weights<'_>,
    alive: Option<&[u8]>,
    inner: V,
) -> V::Output {
    weights.visit_keys(WithAlive { alive, inner })
}
