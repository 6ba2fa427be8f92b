//! The process's allocator: mimalloc. A request allocates and frees a few hundred small
//! blocks across actix-web and our own code; mimalloc's per-thread free lists do that
//! in under half the instructions of glibc's malloc (BENCHMARKS.md, fourth pass).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the calling thread's freed memory back to the system (after a peak of streams).
pub fn give_back_freed_memory() {
    // SAFETY: mi_collect only returns memory no live allocation uses; no preconditions.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Transparent huge pages would let a few live blocks pin 2 MiB pages each: an idle proxy
/// would sit at a third above its size. mimalloc is built not to ask for them (`no_thp`);
/// this also keeps them off where the system hands them out unasked. Called first in `main`.
#[cfg(target_os = "linux")]
pub fn no_huge_pages() {
    // SAFETY: prctl(PR_SET_THP_DISABLE) only sets a flag on this process's memory map.
    // Best effort (before logging starts): a kernel without the flag only costs memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
pub fn no_huge_pages() {}
