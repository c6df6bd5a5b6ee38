//! The survivors a fused pass over masks in place provisionally pruned, one bit per weight:
//! what restores the masks on an error or before the exact fallback.
//!
//! Each parallel job of the pass keeps its chunks' bits in one buffer, and the buffers (an
//! eighth of a byte per weight) are kept for the next call, up to [`RETAINED`] bytes. A buffer
//! per chunk, freed after each call, went back to the allocator, which returned much of it to
//! the kernel: the next call faulted hundreds to a thousand-odd zeroed pages back in, and took
//! longer by about a tenth of the pass.

use std::sync::{Mutex, MutexGuard, TryLockError};

use crate::chunk::{self, Chunk};

/// Bytes of buffers kept between calls: those of 256 M weights.
pub(crate) const RETAINED: usize = 32 << 20;

/// Buffers given back by earlier calls, emptied, and the bytes they hold.
static SPARE: Spare = Spare::new(RETAINED);

struct Spare {
    buffers: Mutex<(Vec<Vec<u32>>, usize)>,
    retained: usize,
}

impl Spare {
    const fn new(retained: usize) -> Spare {
        Spare {
            buffers: Mutex::new((Vec::new(), 0)),
            retained,
        }
    }

    /// The buffers, or None while another thread holds them: never waited for, because a
    /// `fork()` taken while another thread holds the lock (a DataLoader starting its workers
    /// while a selection runs without the GIL) would leave the child waiting forever. A busy
    /// lock only means a fresh buffer, or one not kept.
    fn held(&self) -> Option<MutexGuard<'_, (Vec<Vec<u32>>, usize)>> {
        match self.buffers.try_lock() {
            Ok(guard) => Some(guard),
            // A panic while the lock was held leaves only a list of empty buffers behind.
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// An empty buffer, one given back where there is one.
    fn take(&self) -> Vec<u32> {
        let Some(mut held) = self.held() else {
            return Vec::new();
        };
        let words = held.0.pop().unwrap_or_default();
        held.1 -= bytes(&words);
        words
    }

    /// Keep `buffers`, emptied, while they fit in the bytes retained.
    fn give(&self, buffers: impl Iterator<Item = Vec<u32>>) {
        let Some(mut held) = self.held() else {
            return;
        };
        for mut words in buffers {
            let size = bytes(&words);
            if size > 0 && held.1 + size <= self.retained {
                words.clear();
                held.0.push(words);
                held.1 += size;
            }
        }
    }
}

fn bytes(words: &Vec<u32>) -> usize {
    words.capacity() * std::mem::size_of::<u32>()
}

/// The lost bits of one parallel job's chunks, one after another.
#[derive(Default)]
pub(crate) struct Lost {
    words: Vec<u32>,
}

/// Where a chunk's words lie in its job's [`Lost`]: bit `i` of word `i / 32` is set when weight
/// `i` was alive before the pass and is provisionally pruned by it. Empty when none was.
pub(crate) type LostSpan = std::ops::Range<usize>;

impl Lost {
    /// Room for the lost bits of chunks of `lens` weights, in a buffer an earlier call gave
    /// back where there is one.
    pub(crate) fn for_chunks(lens: impl Iterator<Item = usize>) -> Lost {
        let needed = lens.map(|n| n.div_ceil(32)).sum();
        let mut words = SPARE.take();
        words.reserve(needed);
        Lost { words }
    }

    /// The words of `span`, in weight order.
    pub(crate) fn words(&self, span: LostSpan) -> &[u32] {
        &self.words[span]
    }

    /// Append a chunk's words, computed in order; none kept when no bit is set.
    pub(crate) fn push_words(&mut self, words: impl ExactSizeIterator<Item = u32>) -> LostSpan {
        let start = self.begin(words.len());
        let mut any = 0;
        for word in words {
            self.push(word);
            any |= word;
        }
        self.end(start, any)
    }

    /// Start a chunk of `words` words (room reserved): where it starts, for [`Lost::end`].
    pub(crate) fn begin(&mut self, words: usize) -> usize {
        self.words.reserve(words);
        self.words.len()
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, word: u32) {
        self.words.push(word);
    }

    /// Close the chunk begun at `start`, `any` being the OR of its words: none kept if zero.
    pub(crate) fn end(&mut self, start: usize, any: u32) -> LostSpan {
        if any == 0 {
            self.words.truncate(start);
        }
        start..self.words.len()
    }
}

/// Every chunk's lost bits after the pass: chunk `i`'s are `spans[i].1` of `jobs[spans[i].0]`.
/// Dropped, it gives the jobs' buffers back for the next call.
pub(crate) struct LostBits {
    pub(crate) jobs: Vec<Lost>,
    pub(crate) spans: Vec<(usize, LostSpan)>,
}

impl Drop for LostBits {
    fn drop(&mut self) {
        SPARE.give(self.jobs.drain(..).map(|job| job.words));
    }
}

/// Masks back to the survivors they held before the fused pass.
pub(crate) fn restore(chunks: &mut [Chunk<'_>], lost: &LostBits, parallel: bool) {
    let mut work: Vec<_> = chunks.iter_mut().zip(&lost.spans).collect();
    chunk::map(&mut work, parallel, |(c, (job, span))| {
        for (w, &word) in lost.jobs[*job].words(span.clone()).iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                c.out[w * 32 + bits.trailing_zeros() as usize] = 1;
                bits &= bits - 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks of a job, one after another, read back as written; one with no bit set keeps
    /// nothing.
    #[test]
    fn each_chunk_reads_back_its_own_words() {
        let sizes = [0usize, 1, 15, 40, 33, 2049];
        let chunks: Vec<Vec<u32>> = sizes
            .iter()
            .enumerate()
            .map(|(c, &n)| {
                let word = |i: u32| (i ^ c as u32).wrapping_mul(0x9E37_79B9) | 1;
                // The fourth chunk has no bit set.
                (0..n as u32)
                    .map(|i| if c == 3 { 0 } else { word(i) })
                    .collect()
            })
            .collect();
        let mut lost = Lost::for_chunks(chunks.iter().map(|w| w.len() * 32));
        let room = lost.words.capacity();
        let spans: Vec<LostSpan> = chunks
            .iter()
            .map(|w| lost.push_words(w.iter().copied()))
            .collect();
        for (c, (w, span)) in chunks.iter().zip(&spans).enumerate() {
            let expected: &[u32] = if c == 3 { &[] } else { w };
            assert_eq!(lost.words(span.clone()), expected, "chunk {c}");
        }
        assert_eq!(lost.words.capacity(), room, "reserved once for the job");
    }

    /// Buffers given back are taken again, emptied, up to the bytes retained; while another
    /// thread holds the lock nothing waits: a fresh buffer, and none kept.
    #[test]
    fn spare_buffers_are_reused_within_the_bytes_retained() {
        let spare = Spare::new(1 << 12); // 1,024 words
        let mut words = Vec::with_capacity(600);
        words.extend([1u32, 2, 3]);
        let address = words.as_ptr();
        spare.give([words, Vec::with_capacity(600), Vec::new()].into_iter());
        assert_eq!(
            spare.held().expect("free").0.len(),
            1,
            "the second is over, the third empty"
        );
        let again = spare.take();
        assert_eq!((again.as_ptr(), again.len()), (address, 0));
        assert_eq!(spare.held().expect("free").1, 0);
        assert_eq!(spare.take().capacity(), 0, "none left");
        spare.give([again].into_iter());
        let held = spare.held().expect("free");
        assert_eq!(spare.take().capacity(), 0, "busy: a fresh buffer");
        spare.give([Vec::with_capacity(10)].into_iter());
        assert_eq!(held.0.len(), 1, "busy: not kept");
    }
}
