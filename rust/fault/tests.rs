//! Files cut short under their maps: zeros and a flag for watched ranges, the old death for others.

use std::ffi::c_void;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::{faulted, unwatch, watch};

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A file of `len` bytes of `fill`, mapped read-only; removed (and unmapped) on drop.
struct Mapped {
    path: PathBuf,
    ptr: *const u8,
    len: usize,
}

impl Mapped {
    fn new(len: usize, fill: u8) -> Mapped {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "lt-fault-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        fs::write(&path, vec![fill; len]).unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY: a fresh read-only shared mapping of the whole file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        Mapped {
            path,
            ptr: ptr.cast(),
            len,
        }
    }

    fn cut(&self, len: u64) {
        fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    fn read(&self, at: usize) -> u8 {
        assert!(at < self.len);
        // SAFETY: inside the mapping; volatile, so that the load really happens.
        unsafe { self.ptr.add(at).read_volatile() }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer read.
        unsafe { libc::munmap(self.ptr as *mut c_void, self.len) };
        let _ = fs::remove_file(&self.path);
    }
}

#[test]
fn a_read_past_the_cut_end_of_a_watched_map_gives_zeros_and_the_flag() {
    let p = page();
    let map = Mapped::new(4 * p, 0xab);
    // SAFETY: one read-only file mapping, unwatched below before it is unmapped.
    let token = unsafe { watch(map.ptr, map.len) }.unwrap();
    assert_eq!(map.read(3 * p), 0xab);
    assert_eq!(faulted(token), Some(false));
    map.cut(100);
    assert_eq!(map.read(50), 0xab);
    assert_eq!(map.read(200), 0); // the kernel's zeros after the end, within the last page
    assert_eq!(faulted(token), Some(false));
    assert_eq!(map.read(2 * p + 7), 0); // SIGBUS without the watch
    assert_eq!(map.read(4 * p - 1), 0);
    assert_eq!(map.read(p), 0);
    assert_eq!(faulted(token), Some(true));
    assert_eq!(unwatch(token), Some(true));
    assert_eq!(faulted(token), None); // a stale token names nothing
    assert_eq!(unwatch(token), None);
}

#[test]
fn reads_on_many_threads_past_a_cut_end_give_zeros() {
    let p = page();
    let map = Mapped::new(64 * p, 1);
    // SAFETY: as above.
    let token = unsafe { watch(map.ptr, map.len) }.unwrap();
    map.cut((3 * p + 10) as u64);
    // SAFETY: the mapping stays mapped while the slice lives; like a kernel's input.
    let bytes = unsafe { std::slice::from_raw_parts(map.ptr, map.len) };
    let sum: usize = bytes
        .par_chunks(p)
        .map(|c| c.iter().map(|&b| usize::from(b)).sum::<usize>())
        .sum();
    assert_eq!(sum, 3 * p + 10);
    assert_eq!(unwatch(token), Some(true));
}

#[test]
fn tokens_name_one_live_watch_each_beyond_the_first_chunk() {
    // Heap memory never faults, so these ranges only exercise the table.
    let memory = vec![0u8; 600];
    let tokens: Vec<u64> = (0..600)
        // SAFETY: nothing faults in heap memory, so the handler never touches these pages.
        .map(|i| unsafe { watch(memory.as_ptr().add(i), 1) }.unwrap())
        .collect();
    let mut distinct = tokens.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), tokens.len());
    assert!(tokens.iter().all(|&t| faulted(t) == Some(false)));
    assert!(tokens.iter().all(|&t| unwatch(t) == Some(false)));
    assert!(tokens.iter().all(|&t| faulted(t).is_none()));
    assert_eq!(faulted(u64::MAX), None);
}

#[test]
fn a_fault_outside_the_watched_ranges_still_kills_the_process() {
    let p = page();
    let watched = Mapped::new(2 * p, 1);
    // SAFETY: as above; it installs the handler for the forked child too.
    let token = unsafe { watch(watched.ptr, watched.len) }.unwrap();
    let other = Mapped::new(4 * p, 1);
    other.cut(10);
    // SAFETY: the child only makes raw calls (no allocation, no locks) before it exits.
    let child = unsafe { libc::fork() };
    assert!(child >= 0);
    if child == 0 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain system calls in the child; the read is meant to fault.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            other.ptr.add(2 * p).read_volatile();
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGBUS,
        "status {status:#x}"
    );
    assert_eq!(unwatch(token), Some(false));
}
