//! The data directory: an exclusive lock so two brokers never share one,
//! and a format version so an incompatible layout is refused, not misread.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Layout version of everything under the data dir.
pub const DATA_FORMAT: u32 = 1;
const VERSION_FILE: &str = "VERSION";
const LOCK_FILE: &str = "LOCK";

/// An opened, locked data directory. The lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

impl DataDir {
    pub fn open(path: &Path) -> io::Result<DataDir> {
        std::fs::create_dir_all(path).map_err(|e| {
            err(
                e.kind(),
                format!("cannot create data dir {}: {e}", path.display()),
            )
        })?;
        let lock_path = path.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| {
                err(
                    e.kind(),
                    format!("data dir {} is not writable: {e}", path.display()),
                )
            })?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut pid = String::new();
            let _ = lock.read_to_string(&mut pid);
            return Err(err(
                io::ErrorKind::WouldBlock,
                format!(
                    "data dir {} is in use by another warren (pid {})",
                    path.display(),
                    pid.trim()
                ),
            ));
        }
        lock.set_len(0)?;
        write!(lock, "{}", std::process::id())?;
        let version_path = path.join(VERSION_FILE);
        match std::fs::read_to_string(&version_path) {
            Ok(s) => {
                let v = s
                    .trim()
                    .strip_prefix("warren-data ")
                    .and_then(|v| v.parse::<u32>().ok());
                match v {
                    Some(DATA_FORMAT) => {}
                    Some(other) => {
                        return Err(err(
                            io::ErrorKind::InvalidData,
                            format!(
                                "data dir {} was written by data format version {other}; this warren reads version {DATA_FORMAT}",
                                path.display()
                            ),
                        ));
                    }
                    None => {
                        return Err(err(
                            io::ErrorKind::InvalidData,
                            format!("data dir {}: unreadable {VERSION_FILE} file", path.display()),
                        ));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let non_empty = std::fs::read_dir(path)?
                    .filter_map(|e| e.ok())
                    .any(|e| e.file_name() != LOCK_FILE);
                if non_empty {
                    return Err(err(
                        io::ErrorKind::InvalidData,
                        format!(
                            "data dir {} holds files but no {VERSION_FILE}: not a warren data dir",
                            path.display()
                        ),
                    ));
                }
                let tmp = path.join("VERSION.tmp");
                std::fs::write(&tmp, format!("warren-data {DATA_FORMAT}\n"))?;
                File::open(&tmp)?.sync_all()?;
                std::fs::rename(&tmp, &version_path)?;
                File::open(path)?.sync_all()?;
            }
            Err(e) => return Err(e),
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_and_version_checked() {
        let d = tempfile::tempdir().unwrap();
        let a = DataDir::open(d.path()).unwrap();
        let e = DataDir::open(d.path()).unwrap_err();
        assert!(e.to_string().contains("in use by another warren"), "{e}");
        drop(a);
        let _b = DataDir::open(d.path()).unwrap();
        drop(_b);
        std::fs::write(d.path().join("VERSION"), "warren-data 99\n").unwrap();
        let e = DataDir::open(d.path()).unwrap_err();
        assert!(e.to_string().contains("version 99"), "{e}");
    }

    #[test]
    fn foreign_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("something"), "x").unwrap();
        assert!(DataDir::open(d.path()).is_err());
    }
}
