//! A segment: one pre-allocated, memory-mapped file of message records.
//!
//! Durability contract: [`Segment::append`] copies a record into the shared
//! mapping (page cache: it survives a crash of the process, not of the
//! machine). It is durable once a `fdatasync` of the segment's file that
//! *started after* the append has completed; the store's owner issues those
//! (group commit) and only then confirms. A new segment file is also
//! reported as needing its directory synced, so the file itself survives.
//!
//! Written bytes never change afterwards, which is what lets messages borrow
//! them (as `Bytes`) while later appends go on after them.

use super::disk::{Disk, Mapped, Syncable};
use super::record::{self, Scan};
use bytes::Bytes;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SEGMENT_MAGIC: &[u8; 8] = b"WRNSEG\0\0";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;

/// `msgs.<id>`, zero-padded so names sort in segment order.
pub fn segment_name(id: u64) -> String {
    format!("msgs.{id:020}")
}

/// An immutable region of a mapping, as a `Bytes` owner.
struct MapRegion {
    map: Arc<dyn Mapped>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for MapRegion {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the region lies within the mapping (checked at creation),
        // the mapping lives as long as `self`, and bytes below a segment's
        // write position are never written again.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.start), self.len) }
    }
}

/// One segment file. Owned by its queue's store (on the queue's shard).
pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    map: Arc<dyn Mapped>,
    size: usize,
    write_pos: usize,
    /// Recovered from an earlier run: no more appends.
    sealed: bool,
    /// Records in the segment, and how many are not yet acked.
    pub records: u32,
    pub live: u32,
}

/// A segment's position and counts at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    write_pos: usize,
    records: u32,
    live: u32,
}

/// A record found at recovery.
pub struct Found {
    pub offset: u32,
    pub view: record::RecordView,
}

/// What recovery had to repair in a segment.
#[derive(Debug, Default, Clone)]
pub struct Repair {
    /// Offsets of corrupt records skipped in the middle.
    pub skipped: Vec<u32>,
    /// Offset where a torn tail was cut off.
    pub truncated_at: Option<u32>,
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

impl Segment {
    /// Creates and pre-allocates a segment of `size` bytes.
    pub fn create(disk: &dyn Disk, dir: &Path, id: u64, queue: u64, size: usize) -> io::Result<Segment> {
        let path = dir.join(segment_name(id));
        let map = disk.create_mapped(&path, size)?;
        let mut header = [0u8; HEADER_LEN];
        header[0..8].copy_from_slice(SEGMENT_MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&id.to_le_bytes());
        header[24..32].copy_from_slice(&queue.to_le_bytes());
        // SAFETY: the header range is inside the fresh mapping and not shared.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), map.as_ptr(), HEADER_LEN) };
        Ok(Segment {
            id,
            path,
            map,
            size,
            write_pos: HEADER_LEN,
            sealed: false,
            records: 0,
            live: 0,
        })
    }

    /// Opens an existing segment, scanning and repairing it: a torn or
    /// corrupt tail is zeroed, corrupt records in the middle are skipped.
    /// `None`: a segment whose creation a crash cut short (shorter than its
    /// header, or no header written). Nothing was ever appended to it
    /// (appends follow the header), so it can be removed.
    pub fn open(disk: &dyn Disk, path: &Path, id: u64) -> io::Result<Option<(Segment, Vec<Found>, Repair)>> {
        let map = disk.open_mapped(path)?;
        let size = map.len();
        if size < HEADER_LEN {
            return Ok(None);
        }
        // SAFETY: the whole mapping; nothing else references it yet.
        let data = unsafe { std::slice::from_raw_parts_mut(map.as_ptr(), size) };
        if data[0..8] == [0u8; 8] {
            return Ok(None);
        }
        if &data[0..8] != SEGMENT_MAGIC {
            return Err(invalid(path, "not a warren segment (bad magic)".into()));
        }
        let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(invalid(
                path,
                format!("segment format version {version}, this warren reads version {FORMAT_VERSION}"),
            ));
        }
        let mut found = Vec::new();
        let mut repair = Repair::default();
        let mut pos = HEADER_LEN;
        loop {
            match record::scan(&data[pos..]) {
                Scan::Record(view) => {
                    let total = view.total;
                    found.push(Found {
                        offset: pos as u32,
                        view,
                    });
                    pos += total;
                }
                Scan::End => break,
                Scan::Corrupt { claimed } => {
                    // Mid-segment damage if a valid record follows the
                    // claimed length; otherwise a torn tail.
                    let resumes = claimed.filter(|&c| {
                        pos + c < size && matches!(record::scan(&data[pos + c..]), Scan::Record(_))
                    });
                    match resumes {
                        Some(c) => {
                            repair.skipped.push(pos as u32);
                            pos += c;
                        }
                        None => {
                            repair.truncated_at = Some(pos as u32);
                            data[pos..].fill(0);
                            break;
                        }
                    }
                }
            }
        }
        let n = found.len() as u32;
        Ok(Some((
            Segment {
                id,
                path: path.to_path_buf(),
                map,
                size,
                write_pos: pos,
                sealed: false,
                records: n,
                live: n,
            },
            found,
            repair,
        )))
    }

    pub fn size(&self) -> usize {
        self.size
    }
    pub fn write_pos(&self) -> usize {
        self.write_pos
    }
    pub fn remaining(&self) -> usize {
        if self.sealed {
            0
        } else {
            self.size - self.write_pos
        }
    }
    /// The file, for syncing (kept alive by the sync even if the segment
    /// is deleted meanwhile).
    pub fn file(&self) -> Arc<dyn Syncable> {
        self.map.clone()
    }

    /// Takes no more appends (its space is left unused).
    pub fn seal(&mut self) {
        self.sealed = true;
    }

    /// Where the segment stands, to [`Segment::cut_back`] to.
    pub fn mark(&self) -> Mark {
        Mark {
            write_pos: self.write_pos,
            records: self.records,
            live: self.live,
        }
    }

    /// Undoes the appends made since `mark`: their bytes are zeroed (the
    /// end of the written part again), so no recovery finds them.
    pub fn cut_back(&mut self, mark: Mark) {
        debug_assert!(mark.write_pos <= self.write_pos);
        // SAFETY: [mark, write_pos) is inside the mapping and above every
        // byte a message may borrow (those appends were never handed out).
        unsafe {
            std::ptr::write_bytes(
                self.map.as_ptr().add(mark.write_pos),
                0,
                self.write_pos - mark.write_pos,
            )
        };
        self.write_pos = mark.write_pos;
        self.records = mark.records;
        self.live = mark.live;
    }

    /// Appends a record written by `write` into `len` bytes; returns its
    /// offset, or `None` if it does not fit.
    pub fn append(&mut self, len: usize, write: impl FnOnce(&mut [u8]) -> usize) -> Option<u32> {
        if len > self.remaining() {
            return None;
        }
        let at = self.write_pos;
        // SAFETY: [at, at+len) is inside the mapping and above the write
        // position, so no `Bytes` borrows it.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(at), len) };
        let n = write(dst);
        debug_assert_eq!(n, len);
        self.write_pos += len;
        self.records += 1;
        self.live += 1;
        Some(at as u32)
    }

    /// The written bytes in `[start, end)` as `Bytes` borrowing the mapping
    /// (one allocation, however many messages are then sliced from it).
    pub fn region(&self, start: usize, end: usize) -> Bytes {
        assert!(start <= end && end <= self.write_pos);
        Bytes::from_owner(MapRegion {
            map: self.map.clone(),
            start,
            len: end - start,
        })
    }
}
