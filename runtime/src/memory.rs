//! How the process keeps and returns freed memory (glibc's allocator; nothing elsewhere).
//!
//! A forward pass allocates the same activation buffers, up to tens of MiB each, pass after
//! pass. By default glibc serves the largest from fresh `mmap`s and gives them back on free, so
//! every pass faults in and zeroes its buffers again: for a 32 × 128-token BERT-base pass, 9 %
//! of the CPU in page faults (`perf`, release build), 835,000 faults for a 256-record batch job.
//! [`keep_freed`] keeps freed buffers in the heap instead; [`give_back`] returns what is free
//! once, after a load has replaced its f32 copies of the weights.

/// Largest buffer served from the heap (larger ones are mapped and unmapped each time): above
/// a BERT-base FFN activation of 32 × 128 tokens (48 MiB), within glibc's 64 MiB thread heaps.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HEAP_LIMIT: std::ffi::c_int = 64 * 1024 * 1024;

/// Keeps freed memory in the heap for the next pass (buffers up to 64 MiB from the heap, no
/// automatic trimming). The process then holds, between requests, the working memory of its
/// largest pass so far, which its peak already counted. Call first in `main`, before any other
/// thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_freed() {
    const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
    const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    // SAFETY: glibc's `mallopt` with documented parameters; the caller runs it before any other
    // thread exists.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, HEAP_LIMIT);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Not glibc: the allocator's own policy stands.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed() {}

/// Hands the memory that is free now back to the system. Loading packs each layer's f32
/// weights into panels (and, with `--dtype bfloat16`, those into bf16), freeing the copy it
/// replaces; kept in the heap, a bf16 BERT-base would hold 452 MiB of PSS instead of ~310.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's `malloc_trim` takes no pointer, only returns free heap pages to the
    // system, and is safe to call from any thread at any time.
    unsafe {
        malloc_trim(0);
    }
}

/// Not glibc: nothing to do.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() {}

/// Asks for huge (2 MiB) pages for the whole 2 MiB pages inside `len` bytes at `ptr` (Linux,
/// when transparent huge pages are `madvise`d or always on; elsewhere, or if the kernel says no,
/// nothing changes). Used for packed weights, which every pass streams from memory: with 4 KiB
/// pages, the page walks for their addresses cost the encoder products 4–7 % on this machine.
/// Call it after the memory is written: the kernel's `khugepaged` then merges the pages in the
/// background (here 16 MiB every 10 s, so a BERT-base in about 3½ minutes). Asked before the
/// first write instead, each fault waits for a free huge page to be made: loads here took 0.7–1 s
/// instead of 0.3 s.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn prefer_huge_pages(ptr: *mut u8, len: usize) {
    const HUGE: usize = 2 << 20;
    const MADV_HUGEPAGE: std::ffi::c_int = 14;
    unsafe extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize).saturating_add(len) / HUGE * HUGE;
    if end > start {
        // SAFETY: `madvise` with a hint (no data changes) on whole pages inside the caller's
        // allocation; a refusal is harmless and ignored.
        unsafe {
            madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE);
        }
    }
}

/// Not Linux: no such hint.
#[cfg(not(target_os = "linux"))]
pub(crate) fn prefer_huge_pages(_: *mut u8, _: usize) {}
