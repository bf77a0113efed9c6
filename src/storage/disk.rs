//! Where storage keeps its files: the real file system ([`RealDisk`]) or a
//! simulated disk ([`super::sim_disk::SimDisk`]) on which the deterministic
//! simulation and the tests inject latency, torn writes, failed syncs and
//! crashes. Every file the stores and the topology log touch goes through a
//! [`Disk`]; nothing else in storage opens a file.
//!
//! The failure rule every implementation keeps: an append either completes
//! or is rolled back before anything else is appended to the same file (a
//! failed append leaves the file as it was), and a failed sync is reported,
//! never retried silently (the page cache can no longer be trusted: the
//! caller stops confirming what that file holds).

use std::io;
use std::path::Path;
use std::sync::Arc;

/// Something whose written data can be made durable.
pub trait Syncable: Send + Sync {
    /// Marks where a sync starts: what is written from now on need not be
    /// covered by it. A no-op on a real disk (an `fdatasync` started now
    /// covers at least that); the simulated disk keeps exactly this much.
    fn begin_sync(&self) {}
    /// Makes everything written up to [`Syncable::begin_sync`] (or up to
    /// now, without one) durable (`fdatasync`).
    fn sync(&self) -> io::Result<()>;
}

/// A fixed-size file mapped into memory, written in place. Bytes below
/// the writer's position are never written again, which lets messages
/// borrow them.
pub trait Mapped: Syncable {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The start of the mapping, valid (and fixed) while `self` lives.
    fn as_ptr(&self) -> *mut u8;
}

/// A file written only at its end.
pub trait AppendFile: Syncable {
    /// Appends all of `data`, or nothing: on error the file is cut back to
    /// its previous length before returning.
    fn append(&self, data: &[u8]) -> io::Result<()>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file system for storage.
pub trait Disk: Send + Sync {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of a directory.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool;
    /// A whole file; `NotFound` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Replaces `to` with `from` atomically.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Creates a file holding exactly `data`, synced.
    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Creates a new file of `size` bytes, its blocks reserved now (a full
    /// disk is an error here, not a fault at a later write), mapped.
    fn create_mapped(&self, path: &Path, size: usize) -> io::Result<Arc<dyn Mapped>>;
    fn open_mapped(&self, path: &Path) -> io::Result<Arc<dyn Mapped>>;
    /// A file to append to, created (empty) if missing.
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn AppendFile>>;
    /// A directory, to sync its entries (created or removed files).
    fn open_dir(&self, path: &Path) -> io::Result<Arc<dyn Syncable>>;
}

/// The machine's file system: std::fs, memmap2 and posix_fallocate.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl RealDisk {
    /// A shared handle, as the stores keep it.
    pub fn shared() -> Arc<dyn Disk> {
        Arc::new(RealDisk)
    }
}

struct RealMapped {
    file: std::fs::File,
    map: memmap2::MmapRaw,
}

impl Syncable for RealMapped {
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Mapped for RealMapped {
    fn len(&self) -> usize {
        self.map.len()
    }
    fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

struct RealAppend {
    file: std::fs::File,
    /// The length we wrote up to; appends are serialized by their owner,
    /// the lock only makes the handle shareable with the syncer thread.
    len: std::sync::Mutex<u64>,
}

impl Syncable for RealAppend {
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl AppendFile for RealAppend {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut len = self.len.lock().unwrap_or_else(|p| p.into_inner());
        match (&self.file).write_all(data) {
            Ok(()) => {
                *len += data.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut a partial write back off: what follows must not land
                // behind a torn record.
                if let Err(t) = self.file.set_len(*len) {
                    log::error!("cannot roll back a failed append: {t}");
                }
                Err(e)
            }
        }
    }
    fn len(&self) -> u64 {
        *self.len.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct RealDir(std::fs::File);

impl Syncable for RealDir {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(path)?;
        f.write_all(data)?;
        f.sync_all()
    }
    fn create_mapped(&self, path: &Path, size: usize) -> io::Result<Arc<dyn Mapped>> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(size as u64)?;
        // Reserve the blocks now: a mapped write into a hole on a full disk
        // would be a SIGBUS instead of an error.
        // SAFETY: plain syscall on an fd we own.
        let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
        if r != 0 {
            let _ = std::fs::remove_file(path);
            return Err(io::Error::from_raw_os_error(r));
        }
        let map = memmap2::MmapRaw::map_raw(&file)?;
        Ok(Arc::new(RealMapped { file, map }))
    }
    fn open_mapped(&self, path: &Path) -> io::Result<Arc<dyn Mapped>> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        let map = memmap2::MmapRaw::map_raw(&file)?;
        Ok(Arc::new(RealMapped { file, map }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn AppendFile>> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Arc::new(RealAppend {
            file,
            len: std::sync::Mutex::new(len),
        }))
    }
    fn open_dir(&self, path: &Path) -> io::Result<Arc<dyn Syncable>> {
        Ok(Arc::new(RealDir(std::fs::File::open(path)?)))
    }
}
