//! Handing free heap memory back to the system. glibc keeps freed memory for reuse;
//! after a peak (loading a whole eBPF object, a container's teardown) the agent's RSS
//! would stay at the peak.

/// Returns the heap's free memory to the system (glibc's `malloc_trim`).
pub fn trim() {
    // SAFETY: takes no pointers; it only releases memory nobody holds.
    unsafe {
        libc::malloc_trim(0);
    }
}
