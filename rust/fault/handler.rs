//! The SIGBUS handler: installed once, in front of the action that was there before.
//!
//! A handler installed after ours (e.g. `faulthandler.enable()` after the first watch) sees a
//! fault first; ours then only gets what it forwards.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use libc::{c_int, sighandler_t, siginfo_t};

use super::chunks;

static PAGE: AtomicUsize = AtomicUsize::new(0);
/// The action before ours: where a SIGBUS outside the watched ranges goes.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();

pub(super) fn install() -> io::Result<()> {
    // SAFETY: sysconf and sigaction have no preconditions beyond valid pointers.
    let done = INSTALLED.get_or_init(|| unsafe { install_once() });
    done.map_err(io::Error::from_raw_os_error)
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

unsafe fn install_once() -> Result<(), i32> {
    let page = libc::sysconf(libc::_SC_PAGESIZE);
    if page <= 0 {
        return Err(errno());
    }
    PAGE.store(page as usize, Ordering::Relaxed);
    let mut old: libc::sigaction = std::mem::zeroed();
    if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
        return Err(errno());
    }
    // Set before ours is in place, so that the handler never runs without it.
    let _ = PREVIOUS.set(old);
    let mut action: libc::sigaction = std::mem::zeroed();
    action.sa_sigaction = on_sigbus as *const () as sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    libc::sigemptyset(&mut action.sa_mask);
    if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
        return Err(errno());
    }
    Ok(())
}

/// Raised by the kernel for a memory access, not sent by `kill`: sent codes are <= 0 on Linux
/// and >= 0x10001 on macOS and the BSDs; Linux's SI_KERNEL (0x80) carries no address.
fn from_fault(code: c_int) -> bool {
    0 < code && code < 0x80
}

extern "C" fn on_sigbus(sig: c_int, info: *mut siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel hands an SA_SIGINFO handler a valid siginfo_t.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if from_fault(code) && zero_fill(addr) {
        return; // the read runs again, on zeros
    }
    // SAFETY: the previous action gets the signal as the kernel would have given it.
    unsafe { forward(sig, info, context, code) }
}

/// Map zero pages over every watched range holding `addr`, from its page on; false if none
/// does (or the mapping failed).
fn zero_fill(addr: usize) -> bool {
    let page = PAGE.load(Ordering::Relaxed);
    let mut filled = false;
    for slot in chunks().flat_map(|c| c.slots.iter()) {
        let Some((start, end)) = slot.range() else {
            continue;
        };
        if addr < start || addr >= end {
            continue;
        }
        let first = addr / page * page;
        // Only whole pages of the range after the faulting one: its last, partial page may
        // belong to another mapping if the range is not a whole mapping.
        let stop = (end / page * page).max(first + page);
        // SAFETY: by `watch`'s contract these pages are of one read-only file mapping (the
        // faulting page is a file page in any case), and the ones past a cut end can only fault.
        let zeros = unsafe {
            libc::mmap(
                first as *mut c_void,
                stop - first,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros == libc::MAP_FAILED {
            return false;
        }
        slot.faulted.store(true, Ordering::Release);
        filled = true;
    }
    filled
}

unsafe fn forward(sig: c_int, info: *mut siginfo_t, context: *mut c_void, code: c_int) {
    let (previous, flags) = PREVIOUS
        .get()
        .map_or((libc::SIG_DFL, 0), |a| (a.sa_sigaction, a.sa_flags));
    if previous == libc::SIG_IGN && !from_fault(code) {
        return; // a sent SIGBUS stays ignored (a fault cannot be: it would run again forever)
    }
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        // A fault runs the read again and meets the default action; a sent signal is raised
        // again (blocked until we return).
        if !from_fault(code) {
            libc::raise(sig);
        }
        return;
    }
    let handler = std::ptr::with_exposed_provenance::<c_void>(previous);
    if flags & libc::SA_SIGINFO != 0 {
        let handler: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
            std::mem::transmute(handler);
        handler(sig, info, context);
    } else {
        let handler: extern "C" fn(c_int) = std::mem::transmute(handler);
        handler(sig);
    }
}
