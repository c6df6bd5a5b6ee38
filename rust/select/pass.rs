//! The fused pass over every chunk, [`CHUNKS_PER_BUFFER`] to a parallel job: each chunk's
//! counts, its provisional mask, and its in-bracket candidates in a buffer shared with the
//! job's other chunks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use super::scan::{scan_weights, Counts, BLOCK};
use super::{simd, Bracket, Follower};
use crate::chunk::{self, Chunk};
use crate::magnitude::Key;

#[derive(Default)]
pub(crate) struct ScanTotals {
    pub alive: u64,
    pub below: u64,
    pub candidates: u64,
    pub overflow: bool,
    pub nan_tensor: Option<usize>,
}

/// Provisional masks, counts and in-bracket candidates (per chunk, parallel to `chunks`). Each
/// chunk's candidates start with room for `share` of its weights ([`candidate_room`]); `follow`
/// is told each chunk's provisional mask right after its scan.
pub(crate) fn fused_pass<K: Key>(
    chunks: &mut [Chunk<'_>],
    bracket: Bracket<K>,
    cap: usize,
    share: f64,
    parallel: bool,
    follow: Option<&dyn Follower>,
) -> FusedScan<K> {
    let fast = K::BITS == 31 && simd::available();
    let no_state = |_: &[Chunk<'_>]| ();
    let (scan, _, _) = grouped_pass(chunks, cap, share, parallel, no_state, |c, sink, _| {
        let scan = |out: &mut [u8]| {
            let counts = scan_weights(c.weights, c.alive, Some(&mut *out), bracket, sink, fast);
            if let Some(follow) = follow {
                follow.chunk(c.tensor, c.start, out);
            }
            counts
        };
        let counts = if c.out.len() == c.weights.len() {
            scan(c.out)
        } else {
            // No mask is kept (the follower's outputs are the result): the chunk's stays in cache.
            chunk::with_scratch(c.weights.len(), scan)
        };
        (counts, ())
    });
    scan
}

/// Chunks whose candidates share one buffer, in chunk order: the fix-up then reads each buffer
/// front to back, where a list per chunk (a few KiB each, spread over the heap) cost it a cache
/// and TLB miss at every chunk and read at a quarter of the speed. Small enough that the jobs
/// still balance over the threads.
const CHUNKS_PER_BUFFER: usize = 16;

/// The fused pass over `chunks`, [`CHUNKS_PER_BUFFER`] at a time: `scan_one` scans a chunk,
/// appending its candidates to the sink it is given (None once more than `cap` were collected:
/// the exact fallback will run, and every candidate is dropped) and anything else to its job's
/// state (made by `job_state` from the job's chunks). Returns what `scan_one` returned beside
/// the counts, per chunk, and each job's state.
pub(crate) fn grouped_pass<K: Key, E: Send, G: Send>(
    chunks: &mut [Chunk<'_>],
    cap: usize,
    share: f64,
    parallel: bool,
    job_state: impl Fn(&[Chunk<'_>]) -> G + Sync,
    scan_one: impl Fn(&mut Chunk<'_>, Option<&mut Vec<(K, u32)>>, &mut G) -> (Counts, E) + Sync,
) -> (FusedScan<K>, Vec<E>, Vec<G>) {
    let collected = AtomicU64::new(0);
    let overflow = AtomicBool::new(false);
    let group = |(buffer_index, group): (usize, &mut [Chunk<'_>])| {
        let room: usize = group
            .iter()
            .map(|c| candidate_room(c.weights.len(), share))
            .sum();
        let mut buffer = Vec::with_capacity(room);
        let mut state = job_state(group);
        let mut scans = Vec::with_capacity(group.len());
        for c in group.iter_mut() {
            let collect = !overflow.load(Ordering::Relaxed);
            let start = buffer.len();
            let (counts, extra) = scan_one(c, collect.then_some(&mut buffer), &mut state);
            if collect {
                let n = (buffer.len() - start) as u64;
                if collected.fetch_add(n, Ordering::Relaxed) + n > cap as u64 {
                    overflow.store(true, Ordering::Relaxed);
                }
            }
            if overflow.load(Ordering::Relaxed) {
                buffer = Vec::new(); // the exact fallback will run: free them early
            }
            let scan = ChunkScan {
                tensor: c.tensor,
                alive: counts.alive,
                below: counts.below,
                nan: counts.nan,
                buffer: buffer_index,
                span: start.min(buffer.len())..buffer.len(),
            };
            scans.push((scan, extra));
        }
        (scans, buffer, state)
    };
    let groups: Vec<_> = if parallel {
        let jobs = chunks.par_chunks_mut(CHUNKS_PER_BUFFER).enumerate();
        jobs.map(group).collect()
    } else {
        chunks
            .chunks_mut(CHUNKS_PER_BUFFER)
            .enumerate()
            .map(group)
            .collect()
    };
    let mut totals = ScanTotals {
        overflow: overflow.into_inner(),
        ..ScanTotals::default()
    };
    let mut per_chunk = Vec::with_capacity(chunks.len());
    let mut extras = Vec::with_capacity(chunks.len());
    let mut buffers = Vec::with_capacity(groups.len());
    let mut states = Vec::with_capacity(groups.len());
    for (scans, buffer, state) in groups {
        states.push(state);
        for (mut s, extra) in scans {
            if totals.overflow {
                s.span = 0..0;
            }
            totals.alive += s.alive;
            totals.below += s.below;
            totals.candidates += s.span.len() as u64;
            if s.nan && totals.nan_tensor.is_none() {
                totals.nan_tensor = Some(s.tensor);
            }
            per_chunk.push(s);
            extras.push(extra);
        }
        buffers.push(if totals.overflow { Vec::new() } else { buffer });
    }
    let scan = FusedScan {
        totals,
        per_chunk,
        buffers,
    };
    (scan, extras, states)
}

/// Room for `share` of `len` weights' candidates and a margin. Growing a chunk's list from
/// nothing (six reallocations and copies at a 1% share of a 64 K-weight chunk) slowed the fused
/// pass measurably, most for bf16, whose pass is the shortest per weight.
pub(crate) fn candidate_room(len: usize, share: f64) -> usize {
    if share <= 0.0 {
        return 0;
    }
    (len as f64 * share * 1.25) as usize + BLOCK
}

pub(crate) struct FusedScan<K> {
    pub totals: ScanTotals,
    pub per_chunk: Vec<ChunkScan>,
    /// The candidates, [`CHUNKS_PER_BUFFER`] chunks' to a buffer.
    buffers: Vec<Vec<(K, u32)>>,
}

impl<K> FusedScan<K> {
    /// Each chunk's candidates, (key, index within the chunk) in index order.
    pub(crate) fn candidates(&self) -> Vec<&[(K, u32)]> {
        self.per_chunk
            .iter()
            .map(|s| &self.buffers[s.buffer][s.span.clone()])
            .collect()
    }
}

impl<K> std::ops::Deref for FusedScan<K> {
    type Target = ScanTotals;
    fn deref(&self) -> &ScanTotals {
        &self.totals
    }
}

pub(crate) struct ChunkScan {
    pub tensor: usize,
    pub alive: u64,
    pub below: u64,
    pub nan: bool,
    /// Its candidates: `buffers[buffer][span]` of the [`FusedScan`].
    buffer: usize,
    span: std::ops::Range<usize>,
}

impl ChunkScan {
    /// The parallel job that scanned the chunk: its index among the jobs' states.
    pub(crate) fn job(&self) -> usize {
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk;
    use crate::magnitude::Weights;

    /// Candidates gathered [`CHUNKS_PER_BUFFER`] chunks to a buffer are each chunk's own, in
    /// index order, serial or parallel; over the cap every list is empty and the overflow said.
    #[test]
    fn each_chunk_lists_its_own_candidates() {
        let n = 37 * chunk::CHUNK + 1234; // 39 chunks over three tensors: buffers of 16, 16 and 7
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let bits: Vec<u32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5).to_bits()
            })
            .collect();
        let (a, rest) = bits.split_at(5 * chunk::CHUNK + 7);
        let (b, c) = rest.split_at(20 * chunk::CHUNK);
        let weights = [Weights::F32(a), Weights::F32(b), Weights::F32(c)];
        let bracket = Bracket {
            lo: 0.2f32.to_bits(),
            mid: 0.2003f32.to_bits(),
            hi: 0.201f32.to_bits(),
        };
        let keys = |w: &[u32]| -> Vec<u32> { w.iter().map(|b| b & 0x7fff_ffff).collect() };
        let expected: Vec<Vec<(u32, u32)>> = [a, b, c]
            .iter()
            .flat_map(|w| {
                keys(w)
                    .chunks(chunk::CHUNK)
                    .map(|c| c.to_vec())
                    .collect::<Vec<_>>()
            })
            .map(|c| {
                c.iter()
                    .enumerate()
                    .filter(|(_, &k)| bracket.lo <= k && k < bracket.hi)
                    .map(|(i, &k)| (k, i as u32))
                    .collect()
            })
            .collect();
        let total: usize = expected.iter().map(|l| l.len()).sum();
        assert!(total > 1000);
        for parallel in [false, true] {
            let mut masks: Vec<Vec<u8>> = [a, b, c].iter().map(|w| vec![0; w.len()]).collect();
            let mut outs: Vec<&mut [u8]> = masks.iter_mut().map(|m| m.as_mut_slice()).collect();
            let mut chunks = chunk::split(&weights, None, &mut outs);
            let scan = fused_pass(&mut chunks, bracket, n, 0.01, parallel, None);
            assert!(!scan.overflow);
            assert_eq!(scan.candidates as usize, total);
            let got: Vec<Vec<(u32, u32)>> = scan.candidates().iter().map(|l| l.to_vec()).collect();
            assert_eq!(got, expected, "parallel {parallel}");
            drop(chunks);
            let mut outs: Vec<&mut [u8]> = masks.iter_mut().map(|m| m.as_mut_slice()).collect();
            let mut chunks = chunk::split(&weights, None, &mut outs);
            let capped = fused_pass(&mut chunks, bracket, total / 2, 0.01, parallel, None);
            assert!(capped.overflow);
            assert_eq!(capped.candidates, 0);
            assert!(capped.candidates().iter().all(|l| l.is_empty()));
        }
    }
}
