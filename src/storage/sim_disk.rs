//! A simulated disk, in memory and deterministic, for the simulation and
//! for tests of storage under faults.
//!
//! It keeps two images of every file: what was written (the page cache)
//! and what is durable (what a sync made so). Directory entries (created,
//! removed, renamed files) become durable when their directory is synced.
//! On top of the real disk's behaviour it can inject, from a seed:
//! failed syncs, failed appends (rolled back, as the [`super::disk`]
//! contract says), a full disk, and two kinds of crash:
//!
//! * a process crash (`kill -9`): the page cache survives, nothing is lost;
//! * a power loss: only durable data survives, and of what was written
//!   since, a random subset of 512-byte sectors (a torn write).

use super::disk::{AppendFile, Disk, Mapped, Syncable};
use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

const SECTOR: usize = 512;

/// Faults to inject, as probabilities per operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// A sync fails (EIO).
    pub sync_error: f64,
    /// An append fails (EIO) and is rolled back.
    pub append_error: f64,
}

/// The contents of one simulated file.
struct FileData {
    /// What was written. A mapped file's buffer is never resized, so its
    /// address stays fixed; appended files (never mapped) grow.
    written: UnsafeCell<Vec<u8>>,
    durable: Mutex<Vec<u8>>,
    /// The image a started sync will make durable.
    syncing: Mutex<Option<Vec<u8>>>,
    mapped: bool,
    /// The disk, weakly: the disk's namespace holds its files, so a strong
    /// reference back would be a cycle and leak every simulated disk.
    disk: Weak<Mutex<State>>,
}

impl FileData {
    /// The disk this file is on. Handles outlive the disk only in a test
    /// that drops the disk first: its I/O then fails.
    fn disk(&self) -> io::Result<Arc<Mutex<State>>> {
        self.disk
            .upgrade()
            .ok_or_else(|| eio("the simulated disk is gone"))
    }
}

// SAFETY: the simulation is single-threaded; the runtime never uses a
// simulated disk. The locks only satisfy the traits' bounds.
unsafe impl Sync for FileData {}
unsafe impl Send for FileData {}

impl FileData {
    fn image(&self) -> Vec<u8> {
        // SAFETY: single-threaded (see above).
        unsafe { (*self.written.get()).clone() }
    }
    fn len(&self) -> usize {
        // SAFETY: single-threaded (see above).
        unsafe { (*self.written.get()).len() }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

#[derive(Clone)]
enum Node {
    Dir,
    File(Arc<FileData>),
}

struct State {
    /// The namespace as written.
    names: BTreeMap<PathBuf, Node>,
    /// The namespace as durable (per directory, as of its last sync).
    durable_names: BTreeMap<PathBuf, Node>,
    rng: u64,
    faults: Faults,
    /// Bytes the disk holds at most (None: unlimited).
    capacity: Option<u64>,
    syncs: u64,
    failed_syncs: u64,
}

impl State {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic from the seed.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    fn used(&self) -> u64 {
        self.names
            .values()
            .map(|n| match n {
                Node::File(f) => f.len() as u64,
                Node::Dir => 0,
            })
            .sum()
    }
    fn room_for(&self, more: u64) -> io::Result<()> {
        match self.capacity {
            Some(cap) if self.used() + more > cap => Err(enospc()),
            _ => Ok(()),
        }
    }
}

/// A simulated disk. Cloning shares it.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            state: Arc::new(Mutex::new(State {
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                rng: seed | 1,
                faults: Faults::default(),
                capacity: None,
                syncs: 0,
                failed_syncs: 0,
            })),
        }
    }

    pub fn set_faults(&self, f: Faults) {
        lock(&self.state).faults = f;
    }

    /// Limits the disk to `bytes` (None: unlimited).
    pub fn set_capacity(&self, bytes: Option<u64>) {
        lock(&self.state).capacity = bytes;
    }

    /// (syncs done, syncs failed).
    pub fn sync_counts(&self) -> (u64, u64) {
        let s = lock(&self.state);
        (s.syncs, s.failed_syncs)
    }

    /// Bytes the files hold.
    pub fn used(&self) -> u64 {
        lock(&self.state).used()
    }

    /// The process died: open handles are gone (the caller drops them),
    /// the page cache survives.
    pub fn crash_process(&self) {}

    /// The machine lost power: the namespace and every file fall back to
    /// their durable image, plus a random subset of the sectors written
    /// since (torn writes).
    pub fn crash_power(&self) {
        let mut s = lock(&self.state);
        let durable = s.durable_names.clone();
        let mut names = BTreeMap::new();
        for (path, node) in durable {
            let node = match node {
                Node::Dir => Node::Dir,
                Node::File(f) => {
                    let written = f.image();
                    let mut image = lock(&f.durable).clone();
                    if f.mapped {
                        // In-place writes: each sector written since the
                        // last sync may or may not have reached the disk.
                        for start in (0..written.len()).step_by(SECTOR) {
                            let end = (start + SECTOR).min(written.len());
                            if image.get(start..end) != Some(&written[start..end]) && s.next() & 1 == 1 {
                                image[start..end].copy_from_slice(&written[start..end]);
                            }
                        }
                    } else if written.len() > image.len() && written.starts_with(&image) {
                        // Appends: some prefix of the unsynced tail, cut
                        // anywhere (a record may be torn).
                        let extra = written.len() - image.len();
                        let keep = (s.next() as usize) % (extra + 1);
                        image.extend_from_slice(&written[image.len()..image.len() + keep]);
                    }
                    Node::File(Arc::new(FileData {
                        written: UnsafeCell::new(image.clone()),
                        durable: Mutex::new(image),
                        syncing: Mutex::new(None),
                        mapped: f.mapped,
                        disk: Arc::downgrade(&self.state),
                    }))
                }
            };
            names.insert(path, node);
        }
        s.names = names.clone();
        s.durable_names = names;
    }

    fn file(&self, path: &Path) -> io::Result<Arc<FileData>> {
        match lock(&self.state).names.get(path) {
            Some(Node::File(f)) => Ok(f.clone()),
            Some(Node::Dir) => Err(io::Error::other(format!("{} is a directory", path.display()))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file", path.display()),
            )),
        }
    }

    fn new_file(&self, path: &Path, data: Vec<u8>, mapped: bool) -> io::Result<Arc<FileData>> {
        let mut s = lock(&self.state);
        let parent = path.parent().unwrap_or(Path::new("/"));
        if !matches!(s.names.get(parent), Some(Node::Dir)) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", parent.display()),
            ));
        }
        s.room_for(data.len() as u64)?;
        let f = Arc::new(FileData {
            written: UnsafeCell::new(data),
            durable: Mutex::new(Vec::new()),
            syncing: Mutex::new(None),
            mapped,
            disk: Arc::downgrade(&self.state),
        });
        s.names.insert(path.to_path_buf(), Node::File(f.clone()));
        Ok(f)
    }
}

struct SimHandle(Arc<FileData>);

impl Syncable for SimHandle {
    fn begin_sync(&self) {
        *lock(&self.0.syncing) = Some(self.0.image());
    }
    fn sync(&self) -> io::Result<()> {
        let disk = self.0.disk()?;
        let mut s = lock(&disk);
        s.syncs += 1;
        let fail = s.faults.sync_error;
        if s.chance(fail) {
            s.failed_syncs += 1;
            return Err(eio("fsync failed"));
        }
        drop(s);
        let image = lock(&self.0.syncing).take().unwrap_or_else(|| self.0.image());
        *lock(&self.0.durable) = image;
        Ok(())
    }
}

impl Mapped for SimHandle {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn as_ptr(&self) -> *mut u8 {
        // SAFETY: single-threaded; a mapped file's buffer never moves.
        unsafe { (*self.0.written.get()).as_mut_ptr() }
    }
}

impl AppendFile for SimHandle {
    fn append(&self, data: &[u8]) -> io::Result<()> {
        {
            let disk = self.0.disk()?;
            let mut s = lock(&disk);
            s.room_for(data.len() as u64)?;
            let fail = s.faults.append_error;
            if s.chance(fail) {
                // Nothing of it stays: the contract's rollback.
                return Err(eio("write failed"));
            }
        }
        // SAFETY: single-threaded; appended files are never mapped.
        unsafe { (*self.0.written.get()).extend_from_slice(data) };
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

struct SimDir {
    disk: Arc<Mutex<State>>,
    path: PathBuf,
}

impl Syncable for SimDir {
    fn sync(&self) -> io::Result<()> {
        let mut s = lock(&self.disk);
        s.syncs += 1;
        let fail = s.faults.sync_error;
        if s.chance(fail) {
            s.failed_syncs += 1;
            return Err(eio("directory fsync failed"));
        }
        let in_dir = |p: &Path| p.parent() == Some(self.path.as_path());
        s.durable_names.retain(|p, _| !in_dir(p));
        let now: Vec<(PathBuf, Node)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect();
        s.durable_names.extend(now);
        Ok(())
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        // Directories are created durable: the simulation's faults are about
        // data, not about the directory tree the broker starts from.
        for p in path.ancestors() {
            s.names.entry(p.to_path_buf()).or_insert(Node::Dir);
            s.durable_names.entry(p.to_path_buf()).or_insert(Node::Dir);
        }
        Ok(())
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let s = lock(&self.state);
        if !matches!(s.names.get(path), Some(Node::Dir)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn exists(&self, path: &Path) -> bool {
        lock(&self.state).names.contains_key(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        Ok(self.file(path)?.image())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match lock(&self.state).names.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        s.names.retain(|p, _| !p.starts_with(path));
        // Removing a queue's store is durable at once in this model: the
        // broker deletes a store only after the queue's deletion is durable.
        s.durable_names.retain(|p, _| !p.starts_with(path));
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = lock(&self.state);
        let node = s
            .names
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        s.names.insert(to.to_path_buf(), node);
        Ok(())
    }
    fn write_synced(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let f = self.new_file(path, data.to_vec(), false)?;
        *lock(&f.durable) = data.to_vec();
        Ok(())
    }
    fn create_mapped(&self, path: &Path, size: usize) -> io::Result<Arc<dyn Mapped>> {
        if self.exists(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let f = self.new_file(path, vec![0u8; size], true)?;
        *lock(&f.durable) = vec![0u8; size];
        Ok(Arc::new(SimHandle(f)))
    }
    fn open_mapped(&self, path: &Path) -> io::Result<Arc<dyn Mapped>> {
        let f = self.file(path)?;
        if !f.mapped {
            // A file written by appends, mapped now (a test's crafted
            // segment): give it a fixed box of its current image.
            let image = f.image();
            let g = Arc::new(FileData {
                written: UnsafeCell::new(image),
                durable: Mutex::new(lock(&f.durable).clone()),
                syncing: Mutex::new(None),
                mapped: true,
                disk: Arc::downgrade(&self.state),
            });
            lock(&self.state)
                .names
                .insert(path.to_path_buf(), Node::File(g.clone()));
            return Ok(Arc::new(SimHandle(g)));
        }
        Ok(Arc::new(SimHandle(f)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn AppendFile>> {
        let f = match self.file(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.new_file(path, Vec::new(), false)?,
            Err(e) => return Err(e),
        };
        Ok(Arc::new(SimHandle(f)))
    }
    fn open_dir(&self, path: &Path) -> io::Result<Arc<dyn Syncable>> {
        if !matches!(lock(&self.state).names.get(path), Some(Node::Dir)) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(Arc::new(SimDir {
            disk: self.state.clone(),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_appends_and_names_are_lost_on_power_loss_only() {
        let d = SimDisk::new(7);
        d.create_dir_all(Path::new("/data")).unwrap();
        let f = d.open_append(Path::new("/data/log")).unwrap();
        f.append(b"hello").unwrap();
        d.crash_process();
        assert_eq!(d.read(Path::new("/data/log")).unwrap(), b"hello");
        // Never synced, nor its directory: gone after a power loss.
        d.crash_power();
        assert!(!d.exists(Path::new("/data/log")));
        let f = d.open_append(Path::new("/data/log")).unwrap();
        f.append(b"kept").unwrap();
        f.sync().unwrap();
        d.open_dir(Path::new("/data")).unwrap().sync().unwrap();
        f.append(b"-maybe").unwrap();
        d.crash_power();
        let got = d.read(Path::new("/data/log")).unwrap();
        assert!(
            got.starts_with(b"kept") && b"kept-maybe".starts_with(&got[..]),
            "{got:?}"
        );
    }

    #[test]
    fn a_sync_covers_what_was_written_before_it_began() {
        let d = SimDisk::new(1);
        d.create_dir_all(Path::new("/d")).unwrap();
        let m = d.create_mapped(Path::new("/d/seg"), 4096).unwrap();
        d.open_dir(Path::new("/d")).unwrap().sync().unwrap();
        // SAFETY: the mapping is 4096 bytes.
        unsafe { std::ptr::copy_nonoverlapping(b"first".as_ptr(), m.as_ptr(), 5) };
        m.begin_sync();
        unsafe { std::ptr::copy_nonoverlapping(b"later".as_ptr(), m.as_ptr().add(SECTOR), 5) };
        m.sync().unwrap();
        // Power loss many times over: "first" always survives; "later" may
        // or may not (torn), never anything else.
        for _ in 0..20 {
            d.crash_power();
            let img = d.read(Path::new("/d/seg")).unwrap();
            assert_eq!(&img[..5], b"first");
            assert!(img[SECTOR..SECTOR + 5] == *b"later" || img[SECTOR..SECTOR + 5] == [0; 5]);
        }
    }

    #[test]
    fn failed_appends_leave_nothing_and_a_full_disk_refuses() {
        let d = SimDisk::new(3);
        d.create_dir_all(Path::new("/d")).unwrap();
        let f = d.open_append(Path::new("/d/a")).unwrap();
        d.set_faults(Faults {
            append_error: 1.0,
            ..Default::default()
        });
        assert!(f.append(b"x").is_err());
        assert_eq!(f.len(), 0);
        d.set_faults(Faults::default());
        d.set_capacity(Some(10));
        f.append(b"0123456789").unwrap();
        let e = f.append(b"!").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(d.create_mapped(Path::new("/d/m"), 1).is_err());
        assert_eq!(d.read(Path::new("/d/a")).unwrap(), b"0123456789");
    }

    /// A disk is freed with its last clone, files and all (its files once
    /// held it strongly: a cycle that leaked every simulated disk, found by
    /// the fuzzers' leak checker); a handle that outlives it fails its I/O.
    #[test]
    fn a_dropped_disk_is_freed() {
        let d = SimDisk::new(1);
        d.create_dir_all(Path::new("/d")).unwrap();
        d.write_synced(Path::new("/d/w"), b"x").unwrap();
        let m = d.create_mapped(Path::new("/d/m"), 16).unwrap();
        let a = d.open_append(Path::new("/d/a")).unwrap();
        a.append(b"y").unwrap();
        let state = Arc::downgrade(&d.state);
        drop(d);
        assert!(state.upgrade().is_none(), "the disk outlived its last clone");
        assert!(m.sync().is_err());
        assert!(a.append(b"z").is_err());
        assert_eq!(m.len(), 16);
    }
}
