//! The border for files: every file whose contents or place another party
//! controls (a pod's `/proc/<pid>/…`, a daemon's configuration in a pod's
//! root) is read here, bounded, without blocking, and without following a
//! symlink anywhere in its path.
//!
//! The open is `openat2` with `RESOLVE_NO_SYMLINKS` (so that no component,
//! not only the last, can send it elsewhere) and `O_NONBLOCK` (a FIFO's
//! open never waits for a writer); where the kernel lacks `openat2` (before
//! 5.6), `O_NOFOLLOW` guards the last component. Only a regular file is
//! read (procfs files are), at most `max` bytes of it.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use nix::libc;

/// What was read: the bytes, and whether the file held more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounded {
    pub bytes: Vec<u8>,
    pub truncated: bool,
}

/// `struct open_how` (linux/openat2.h).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

fn open_no_symlinks(path: &Path) -> io::Result<File> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    let flags =
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY;
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: a NUL-terminated path and an open_how of its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    let fd = if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        // SAFETY: a NUL-terminated path; the flags above.
        unsafe { libc::open(c.as_ptr(), flags) as libc::c_long }
    } else {
        fd
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by the kernel and is ours alone.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
}

/// Reads at most `max` bytes of the regular file at `path` (see the
/// module doc); anything that is not one is an error, found without
/// blocking.
pub fn read(path: &Path, max: usize) -> io::Result<Bounded> {
    let file = open_no_symlinks(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let mut bytes = Vec::with_capacity(max.min(64 << 10));
    // One byte past the bound says whether there was more.
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    let truncated = bytes.len() > max;
    bytes.truncate(max);
    Ok(Bounded { bytes, truncated })
}

/// [`read`] as text, lossily (a byte outside UTF-8 becomes U+FFFD).
pub fn read_text(path: &Path, max: usize) -> io::Result<(String, bool)> {
    let b = read(path, max)?;
    Ok((String::from_utf8_lossy(&b.bytes).into_owned(), b.truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mtuvisor-readfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_file_is_read_up_to_its_bound() {
        let dir = scratch("bound");
        let f = dir.join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(
            read(&f, 4).unwrap(),
            Bounded {
                bytes: b"0123".to_vec(),
                truncated: true
            }
        );
        assert_eq!(
            read(&f, 10).unwrap(),
            Bounded {
                bytes: b"0123456789".to_vec(),
                truncated: false
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_symlink_anywhere_in_the_path_and_no_fifo_is_opened() {
        let dir = scratch("links");
        let secret = dir.join("secret");
        std::fs::write(&secret, b"node file").unwrap();
        // The last component a symlink, and a directory on the way one.
        std::os::unix::fs::symlink(&secret, dir.join("last")).unwrap();
        std::fs::create_dir_all(dir.join("real")).unwrap();
        std::fs::write(dir.join("real/daemon.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("via")).unwrap();
        assert!(read(&dir.join("last"), 100).is_err());
        assert!(read(&dir.join("via/daemon.json"), 100).is_err());
        assert!(read(&dir.join("real/daemon.json"), 100).is_ok());
        // A FIFO with no writer: an ordinary open would wait for ever.
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let began = std::time::Instant::now();
        assert!(read(&fifo, 100).is_err());
        assert!(began.elapsed() < std::time::Duration::from_secs(1));
        assert!(read(&dir, 100).is_err(), "a directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn proc_files_are_regular_files() {
        let (status, truncated) = read_text(
            Path::new(&format!("/proc/{}/status", std::process::id())),
            64 << 10,
        )
        .unwrap();
        assert!(status.contains("NSpid:") && !truncated);
    }
}
