//! The ack log of a segment: which of its records were delivered and which
//! were acked (or otherwise removed), as little-endian u32 entries
//! `offset | DELIVERED`. Appended in batches with one `write` per step.
//!
//! Losing the tail of an ack log (machine crash before sync) brings acked
//! messages back as redeliveries — at-least-once, as with RabbitMQ — but
//! never loses a message.

use super::disk::{AppendFile, Disk, Syncable};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const ACK_MAGIC: &[u8; 8] = b"WRNACK\0\0";
const HEADER_LEN: usize = 16;
const DELIVERED: u32 = 1 << 31;

pub fn ack_name(id: u64) -> String {
    format!("acks.{id:020}")
}

/// What an ack log starts with.
fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(ACK_MAGIC);
    h[8..12].copy_from_slice(&super::segment::FORMAT_VERSION.to_le_bytes());
    h
}

/// One segment's ack log. Owned with its segment.
pub struct AckLog {
    path: PathBuf,
    file: Option<Arc<dyn AppendFile>>,
    pending: Vec<u8>,
    /// Written since the last sync was taken.
    pub unsynced: bool,
}

/// What an ack log says about its segment.
#[derive(Default, Debug)]
pub struct AckState {
    pub acked: HashSet<u32>,
    pub delivered: HashSet<u32>,
}

impl AckLog {
    pub fn new(dir: &Path, id: u64) -> Self {
        AckLog {
            path: dir.join(ack_name(id)),
            file: None,
            pending: Vec::new(),
            unsynced: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn acked(&mut self, offset: u32) {
        self.pending.extend_from_slice(&offset.to_le_bytes());
    }

    pub fn delivered(&mut self, offset: u32) {
        self.pending
            .extend_from_slice(&(offset | DELIVERED).to_le_bytes());
    }

    /// Writes what was recorded since the last flush (one write). On an
    /// error nothing of it is written and it is kept for the next flush.
    /// Returns whether the file was created now (its directory entry must
    /// be synced before what it records counts).
    pub fn flush(&mut self, disk: &dyn Disk) -> io::Result<bool> {
        if self.pending.is_empty() {
            return Ok(false);
        }
        let created = self.file.is_none() && !disk.exists(&self.path);
        if self.file.is_none() {
            let f = disk.open_append(&self.path)?;
            if f.is_empty() {
                f.append(&header())?;
            }
            self.file = Some(f);
        }
        self.file.as_deref().expect("opened").append(&self.pending)?;
        self.pending.clear();
        self.unsynced = true;
        Ok(created)
    }

    pub fn file(&self) -> Option<Arc<dyn Syncable>> {
        self.file.clone().map(|f| f as Arc<dyn Syncable>)
    }

    /// Reads an ack log for recovery, and cuts off what a power loss tore
    /// (a partial header or last entry), so that the entries appended next
    /// start on an entry boundary: appended behind a torn entry, they would
    /// be read back shifted, as other offsets. The cut is a synced copy
    /// renamed over the log (the store syncs its directory after opening).
    pub fn recover(disk: &dyn Disk, path: &Path) -> io::Result<AckState> {
        let buf = match disk.read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(AckState::default()),
            Err(e) => return Err(e),
        };
        let st = Self::parse(&buf, path)?;
        let whole = if buf.len() < HEADER_LEN {
            0
        } else {
            buf.len() - (buf.len() - HEADER_LEN) % 4
        };
        if whole != buf.len() {
            log::warn!(
                "{}: torn tail cut off at {whole} of {} bytes",
                path.display(),
                buf.len()
            );
            if whole == 0 {
                disk.remove_file(path)?;
            } else {
                let mut tmp = path.as_os_str().to_owned();
                tmp.push(".cut");
                let tmp = PathBuf::from(tmp);
                disk.write_synced(&tmp, &buf[..whole])?;
                disk.rename(&tmp, path)?;
            }
        }
        Ok(st)
    }

    /// Reads an ack log. A missing file means nothing was acked; a torn
    /// last entry is ignored.
    pub fn load(disk: &dyn Disk, path: &Path) -> io::Result<AckState> {
        match disk.read(path) {
            Ok(b) => Self::parse(&b, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(AckState::default()),
            Err(e) => Err(e),
        }
    }

    fn parse(buf: &[u8], path: &Path) -> io::Result<AckState> {
        let mut st = AckState::default();
        if buf.len() < HEADER_LEN {
            return Ok(st);
        }
        if &buf[0..8] != ACK_MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not a warren ack log (bad magic)", path.display()),
            ));
        }
        for e in buf[HEADER_LEN..].chunks_exact(4) {
            let v = u32::from_le_bytes(e.try_into().expect("4 bytes"));
            if v & DELIVERED != 0 {
                st.delivered.insert(v & !DELIVERED);
            } else {
                st.acked.insert(v);
            }
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim_disk::SimDisk;

    /// A disk holding ack log `id` with exactly `bytes`; its directory and
    /// path.
    fn log_with(id: u64, bytes: &[u8]) -> (SimDisk, &'static Path, PathBuf) {
        let disk = SimDisk::new(1);
        let dir = Path::new("/q");
        disk.create_dir_all(dir).unwrap();
        let path = dir.join(ack_name(id));
        disk.write_synced(&path, bytes).unwrap();
        (disk, dir, path)
    }

    /// A power loss tore the last entry: recovery cuts it, so entries
    /// appended after the restart are read back as written, not shifted.
    #[test]
    fn a_torn_entry_is_cut_before_new_entries_are_appended() {
        let mut bytes = header().to_vec();
        bytes.extend_from_slice(&40u32.to_le_bytes());
        bytes.extend_from_slice(&[0x50, 0]); // half of the entry for 80
        let (disk, dir, path) = log_with(7, &bytes);

        let st = AckLog::recover(&disk, &path).unwrap();
        assert_eq!(st.acked, HashSet::from([40]));
        let mut log = AckLog::new(dir, 7);
        log.acked(120);
        log.delivered(160);
        log.flush(&disk).unwrap();
        let st = AckLog::load(&disk, &path).unwrap();
        assert_eq!(st.acked, HashSet::from([40, 120]));
        assert_eq!(st.delivered, HashSet::from([160]));
        assert!(!disk.exists(&dir.join("acks.00000000000000000007.cut")));
    }

    /// A power loss tore the header: the log records nothing, and the next
    /// flush starts it again with a whole header (appending behind the torn
    /// one would make it unreadable: "bad magic").
    #[test]
    fn a_torn_header_starts_the_log_again() {
        let (disk, dir, path) = log_with(3, &header()[..5]);

        let st = AckLog::recover(&disk, &path).unwrap();
        assert!(st.acked.is_empty() && st.delivered.is_empty());
        let mut log = AckLog::new(dir, 3);
        log.acked(8);
        assert!(
            log.flush(&disk).unwrap(),
            "a new file: its directory entry must be synced"
        );
        let st = AckLog::load(&disk, &path).unwrap();
        assert_eq!(st.acked, HashSet::from([8]));
    }

    /// A whole log is left as it is.
    #[test]
    fn a_whole_log_is_not_rewritten() {
        let mut bytes = header().to_vec();
        bytes.extend_from_slice(&(4u32 | DELIVERED).to_le_bytes());
        let (disk, _, path) = log_with(1, &bytes);
        let st = AckLog::recover(&disk, &path).unwrap();
        assert_eq!(st.delivered, HashSet::from([4]));
        assert_eq!(disk.read(&path).unwrap(), bytes);
    }
}
