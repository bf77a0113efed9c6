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
                let mut h = [0u8; HEADER_LEN];
                h[0..8].copy_from_slice(ACK_MAGIC);
                h[8..12].copy_from_slice(&super::segment::FORMAT_VERSION.to_le_bytes());
                f.append(&h)?;
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

    /// Reads an ack log. A missing file means nothing was acked; a torn
    /// last entry is ignored.
    pub fn load(disk: &dyn Disk, path: &Path) -> io::Result<AckState> {
        let mut st = AckState::default();
        let buf = match disk.read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(st),
            Err(e) => return Err(e),
        };
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
