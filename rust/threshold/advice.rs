//! Read-ahead advice for the memory a sample touches.
//!
//! A page fault on a file mapping reads a whole read-ahead window around the page (the block
//! device's `read_ahead_kb`, often several MiB). The sample's runs are a few MiB apart in a
//! large checkpoint, so with that default the sample alone would read the whole file from disk
//! before the threshold pass reads it again. `MADV_RANDOM` makes a fault read only its page
//! while the sample runs; the mapping gets the default advice back after, for the sequential
//! passes. On memory that is not a file mapping the advice does nothing.

use crate::magnitude::Weights;

/// While alive, the pages under `weights` are advised `MADV_RANDOM`; dropped, `MADV_NORMAL`.
pub(crate) struct RandomAccess {
    #[cfg(unix)]
    ranges: Vec<(usize, usize)>,
}

impl RandomAccess {
    pub(crate) fn over(weights: &[Weights<'_>]) -> Self {
        #[cfg(unix)]
        {
            let ranges: Vec<(usize, usize)> = weights.iter().filter_map(page_range).collect();
            advise(&ranges, libc::MADV_RANDOM);
            RandomAccess { ranges }
        }
        #[cfg(not(unix))]
        {
            let _ = weights;
            RandomAccess {}
        }
    }
}

impl Drop for RandomAccess {
    fn drop(&mut self) {
        #[cfg(unix)]
        advise(&self.ranges, libc::MADV_NORMAL);
    }
}

/// The page-aligned (start, length) covering a tensor's bytes.
#[cfg(unix)]
fn page_range(w: &Weights<'_>) -> Option<(usize, usize)> {
    let (start, bytes) = match w {
        Weights::F16(x) | Weights::Bf16(x) => (x.as_ptr() as usize, std::mem::size_of_val(*x)),
        Weights::F32(x) => (x.as_ptr() as usize, std::mem::size_of_val(*x)),
        Weights::F64(x) => (x.as_ptr() as usize, std::mem::size_of_val(*x)),
    };
    if bytes == 0 {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let first = start / page * page;
    Some((first, start + bytes - first))
}

#[cfg(unix)]
fn advise(ranges: &[(usize, usize)], advice: libc::c_int) {
    for &(start, len) in ranges {
        // SAFETY: the range covers pages of memory borrowed for the call (the tensors); madvise
        // with RANDOM/NORMAL only changes read-ahead and never the contents. Its errors (memory
        // that is not a mapping it knows) are ignored: the advice is an optimisation.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, advice);
        }
    }
}
