//! Shared mappings of BPF map pages (the event ring, the pid marks), unmapped on drop.

use std::{os::fd::RawFd, ptr::NonNull};

/// The size of a page, the unit the kernel maps BPF maps in.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

pub struct Mapping {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

impl Mapping {
    /// `len` bytes of the map behind `fd`, from byte `offset` (a multiple of the page size).
    pub fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks length and offset.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: this mapping was made by mmap with this length and is not used after.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
