//! The survivors a fused pass over masks in place provisionally pruned, one bit per weight:
//! what restores the masks on an error or before the exact fallback.
//!
//! Each parallel job of the pass keeps its chunks' bits in one buffer, and the buffers (an
//! eighth of a byte per weight) are kept for the next call, up to [`RETAINED`] bytes. A buffer
//! per chunk, freed after each call, went back to the allocator, which returned much of it to
//! the kernel: the next call faulted hundreds to a thousand-odd zeroed pages back in, and took
//! longer by about a tenth of the pass.

use std::sync::{Mutex, MutexGuard};

use crate::chunk::{self, Chunk};

/// Bytes of buffers kept between calls: those of 256 M weights.
pub(crate) const RETAINED: usize = 32 << 20;

/// Buffers given back by earlier calls, emptied, and the bytes they hold.
static SPARE: Mutex<(Vec<Vec<u32>>, usize)> = Mutex::new((Vec::new(), 0));

fn spare() -> MutexGuard<'static, (Vec<Vec<u32>>, usize)> {
    // A panic while the lock was held leaves only a list of empty buffers behind.
    SPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let mut words = {
            let mut spare = spare();
            let words = spare.0.pop().unwrap_or_default();
            spare.1 -= bytes(&words);
            words
        };
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
        let mut spare = spare();
        for mut job in self.jobs.drain(..) {
            let size = bytes(&job.words);
            if size > 0 && spare.1 + size <= RETAINED {
                job.words.clear();
                spare.0.push(job.words);
                spare.1 += size;
            }
        }
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
    /// nothing. Buffers given back are reused, emptied, up to the bytes retained.
    #[test]
    fn each_chunk_reads_back_its_own_words_and_buffers_are_reused() {
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

        // Other tests share the spare buffers: ours is found by its address.
        let address = lost.words.as_ptr();
        drop(LostBits {
            jobs: vec![lost],
            spans: Vec::new(),
        });
        let kept = spare()
            .0
            .iter()
            .any(|w| w.as_ptr() == address && w.is_empty());
        assert!(kept, "the buffer is kept, emptied");
        let huge = Lost {
            words: Vec::with_capacity(RETAINED / 4 + 1),
        };
        let address = huge.words.as_ptr();
        drop(LostBits {
            jobs: vec![huge],
            spans: Vec::new(),
        });
        assert!(!spare().0.iter().any(|w| w.as_ptr() == address));
        assert!(spare().1 <= RETAINED);
    }
}
