//! Out of memory as a one-line error instead of an abort with a backtrace.
//!
//! Rust's default reaction to a failed allocation is to print a message and a backtrace and
//! abort (exit 134). The binary installs [`OneLineOnOom`] as its global allocator: when an
//! allocation fails, it writes `nifreeze-rs: error: out of memory …` and exits with code 1
//! (a failure while running). Allocations made through [`fallible`] (the big series
//! buffers, with `try_reserve`) are excluded: they get the null pointer and report their own,
//! more specific error. The up-front estimate (`commands::resources::check_memory`) refuses
//! most such runs before they start; this is the backstop.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static FALLIBLE: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` with allocation failures returned to the caller (for `try_reserve`).
pub fn fallible<T>(f: impl FnOnce() -> T) -> T {
    let prev = FALLIBLE.with(|c| c.replace(true));
    let out = f();
    FALLIBLE.with(|c| c.set(prev));
    out
}

/// The system allocator, ending the process with one line on failure (see the module doc).
pub struct OneLineOnOom;

fn out_of_memory(size: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    let mut put = |s: &[u8]| {
        for &b in s {
            if n < buf.len() {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"nifreeze-rs: error: out of memory: an allocation of ");
    let mb = size / 1_000_000;
    let mut digits = [0u8; 20];
    let mut k = digits.len();
    let mut v = mb;
    loop {
        k -= 1;
        digits[k] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[k..]);
    put(b" MB failed; raise the memory limit or use a larger machine\n");
    #[cfg(unix)]
    // SAFETY: write(2) of a stack buffer and _exit(2) touch no allocator state.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), n);
        libc::_exit(1);
    }
    #[cfg(not(unix))]
    std::process::abort();
}

fn check(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() && !FALLIBLE.with(|c| c.get()) {
        out_of_memory(size);
    }
    p
}

// SAFETY: every call is forwarded to `System` unchanged; only a null result is acted on.
unsafe impl GlobalAlloc for OneLineOnOom {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(System.alloc(layout), layout.size())
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(System.alloc_zeroed(layout), layout.size())
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(System.realloc(ptr, layout, new_size), new_size)
    }
}
