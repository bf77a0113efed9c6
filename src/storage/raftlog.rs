//! The Raft log of one group, on files: entries, truncations, purges, the
//! vote and the committed log id, as one append-only stream of records in
//! pre-allocated, memory-mapped segment files. Payloads are opaque here
//! (the cluster layer encodes openraft's types); this file owns the format,
//! the in-memory index, recovery and which files need syncing.
//!
//! ```text
//! dir/raft.<id:020>    segments, ids consecutive; Options::segment_size bytes
//!                      each (a record larger than that gets a segment of its own)
//! segment := header record* zeroes
//! header  := "WRNRAFT\0" version:u32le 0:u32le id:u64le prev_end:u64le   (32 bytes)
//!            prev_end: where the previous segment's records ended when this
//!            one was started (0 for the first segment ever)
//! record  := len:u32le crc:u32le payload[len]   (crc: CRC-32 over len and payload)
//! payload := 1 index:u64le entry       an entry
//!          | 2 from:u64le              truncate: the entries at from.. are gone
//!          | 3 index:u64le log_id      purge: the entries at ..=index are gone,
//!                                      log_id is the last purged one
//!          | 4 vote                    the vote
//!          | 5 committed               the committed log id
//! ```
//!
//! `version` names this framing *and* the caller's encoding of the payloads
//! (openraft's serde encodings are not stable across its versions): bump
//! [`FORMAT_VERSION`] when either changes. A segment of another version is
//! refused.
//!
//! Every segment starts with the state (purge, vote, committed records) as
//! it was when the segment was started, so removing older segments never
//! loses the vote or the purge point. The state of the log is the replay of
//! the records, in order, of the segments that remain.
//!
//! Durability contract: every call writes its record into the mapping
//! (page cache) and updates the index at once, so what it wrote is readable
//! on return. It is durable once a sync of the files [`RaftLog::take_sync`]
//! returned afterwards has completed (the owner batches those: group
//! commit). The log after a crash is the replay of a prefix of the records:
//! never a record without every record before it.
//!
//! Recovery: each segment's records are read up to the first invalid one.
//! A torn record (one reaching past the end of the file, or whose part in
//! one of its 512-byte sectors is zeroes up to the sector's end: a sector
//! that never reached the disk) or invalid bytes with no valid record
//! after them are a torn tail: cut off, logged. A bad record followed
//! by a valid one is damage in the middle of the log: the log is refused
//! (a Raft log that lost entries it acknowledged must be rebuilt from its
//! peers, not used). A segment whose predecessor ended before its
//! `prev_end` follows a torn tail: it and the later segments are set aside
//! (renamed `*.dropped`), logged.

use super::disk::{Disk, Mapped, Syncable};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAGIC: &[u8; 8] = b"WRNRAFT\0";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 32;
/// Bytes of a record before its payload.
pub const RECORD_PREFIX: usize = 8;
pub const DEFAULT_SEGMENT_SIZE: usize = 64 << 20;
const SECTOR: usize = 512;
/// Bytes of checksums recovery computes looking for a valid record after
/// a bad one, before it gives up and calls the damage unexplained.
const SEARCH_BUDGET: usize = 64 << 20;

const ENTRY: u8 = 1;
const TRUNCATE: u8 = 2;
const PURGE: u8 = 3;
const VOTE: u8 = 4;
const COMMITTED: u8 = 5;

/// `raft.<id>`, zero-padded so names sort in segment order.
pub fn segment_name(id: u64) -> String {
    format!("raft.{id:020}")
}

fn segment_id(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("raft.")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The tunables of a Raft log.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Bytes of a segment file (pre-allocated).
    pub segment_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// What [`RaftLog::open`] found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub segments: usize,
    pub entries: usize,
    /// What was repaired (each also logged as a warning).
    pub repairs: Vec<String>,
}

/// One segment file.
struct Seg {
    id: u64,
    path: PathBuf,
    map: Arc<dyn Mapped>,
    /// End of the records; bytes below it are never written again.
    write_pos: usize,
    /// Takes no more records.
    sealed: bool,
    /// The highest index of an entry it holds that was not truncated
    /// (purged ones included).
    max_index: Option<u64>,
    /// Written since the last [`RaftLog::take_sync`].
    dirty: bool,
}

impl Seg {
    /// The records written so far.
    fn written(&self) -> &[u8] {
        // SAFETY: [0, write_pos) lies in the mapping, which lives as long
        // as `self`, and bytes below write_pos are never written again.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.write_pos) }
    }
    fn room(&self) -> usize {
        if self.sealed {
            0
        } else {
            self.map.len() - self.write_pos
        }
    }
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    off: usize,
    len: u32,
}

/// One decoded record.
enum Rec<'a> {
    Entry(u64, &'a [u8]),
    Truncate(u64),
    Purge(u64, &'a [u8]),
    Vote(&'a [u8]),
    Committed(&'a [u8]),
}

fn parse(payload: &[u8]) -> Option<Rec<'_>> {
    let (&kind, rest) = payload.split_first()?;
    let u64_at = |b: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?)) };
    Some(match kind {
        ENTRY => Rec::Entry(u64_at(rest)?, &rest[8..]),
        TRUNCATE if rest.len() == 8 => Rec::Truncate(u64_at(rest)?),
        PURGE => Rec::Purge(u64_at(rest)?, &rest[8..]),
        VOTE => Rec::Vote(rest),
        COMMITTED => Rec::Committed(rest),
        _ => return None,
    })
}

fn checksum(len: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// The valid record at the start of `buf`: its total length.
fn valid_at(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(buf.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf.get(4..8)?.try_into().ok()?);
    let total = RECORD_PREFIX.checked_add(len)?;
    if len == 0 || total > buf.len() {
        return None;
    }
    (checksum(&buf[0..4], &buf[RECORD_PREFIX..total]) == crc).then_some(total)
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()))
}

/// How a segment's scan ended.
enum End {
    /// Zeroes: the end of what was written.
    Clean,
    /// A torn tail or trailing garbage, cut off at the scan's end.
    Cut(String),
}

/// What a segment holds: its records (offset, length), where they end and how.
type Scanned = (Vec<(usize, usize)>, usize, End);

/// Reads a segment's records (after its header). `Err` for damage in the
/// middle (a bad record with a valid one after it).
fn scan(data: &[u8], path: &Path) -> io::Result<Scanned> {
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    loop {
        let rest = &data[pos..];
        if rest.len() < RECORD_PREFIX && rest.iter().all(|&b| b == 0) {
            return Ok((records, pos, End::Clean));
        }
        if rest.len() >= RECORD_PREFIX && rest[..RECORD_PREFIX].iter().all(|&b| b == 0) {
            return Ok((records, pos, End::Clean));
        }
        if let Some(total) = valid_at(rest) {
            records.push((pos, total));
            pos += total;
            continue;
        }
        // A bad record: torn (never completely written) or damaged.
        let claimed = rest
            .get(0..4)
            .map(|b| RECORD_PREFIX + u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
        let torn = match claimed {
            None => true,
            Some(total) if total > rest.len() => true,
            Some(total) => has_zero_sector(data, pos, pos + total),
        };
        if torn {
            return Ok((records, pos, End::Cut(format!("torn record at offset {pos}"))));
        }
        if let Some(next) = valid_after(data, pos + 1) {
            return Err(invalid(
                path,
                format!(
                    "damaged record at offset {pos} (a valid record follows at {next}): \
                     the Raft log is corrupt; rebuild this node's log from its peers"
                ),
            ));
        }
        return Ok((records, pos, End::Cut(format!("invalid bytes at offset {pos}"))));
    }
}

/// Whether the record at `[start, end)` is torn: a 512-byte sector of the
/// file it overlaps is all zeroes from the record (or the sector's start)
/// to the sector's end. A sector lost in a crash holds what an earlier
/// sync left: written bytes before that sync's point, zeroes after it
/// (the file was pre-allocated), and an unsynced record lies after it.
fn has_zero_sector(data: &[u8], start: usize, end: usize) -> bool {
    let mut s = start / SECTOR * SECTOR;
    while s < end.min(data.len()) {
        let block = &data[s.max(start)..(s + SECTOR).min(data.len())];
        if block.iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// The offset of a valid record at or after `from`, if any (or the offset
/// where the search ran out of budget: damage not explained either way is
/// treated as damage).
fn valid_after(data: &[u8], from: usize) -> Option<usize> {
    let mut budget = SEARCH_BUDGET;
    for p in from..data.len().saturating_sub(RECORD_PREFIX) {
        let len = u32::from_le_bytes(data[p..p + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || p + RECORD_PREFIX + len > data.len() {
            continue;
        }
        if !matches!(data[p + RECORD_PREFIX], ENTRY..=COMMITTED) {
            continue;
        }
        if budget < len {
            return Some(p);
        }
        budget -= len;
        if valid_at(&data[p..]).is_some() {
            return Some(p);
        }
    }
    None
}

/// The Raft log of one group: its segments, the index of its entries and
/// its state. Owned by the shard that runs the group; not thread-safe.
pub struct RaftLog {
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    dir_file: Arc<dyn Syncable>,
    opts: Options,
    /// Oldest first (ids consecutive but for what a purge removed); the
    /// last one takes the appends.
    segs: VecDeque<Seg>,
    index: BTreeMap<u64, Loc>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
    /// A segment was created or removed since the last sync.
    dir_dirty: bool,
}

impl RaftLog {
    /// Opens (or creates) the log in `dir`, recovering what its segments
    /// hold (see the module's doc for what is repaired and what refused).
    pub fn open(disk: Arc<dyn Disk>, dir: &Path, opts: Options) -> io::Result<(RaftLog, Recovery)> {
        assert!(opts.segment_size > HEADER_LEN, "segment size too small");
        disk.create_dir_all(dir)?;
        let dir_file = disk.open_dir(dir)?;
        let mut ids: Vec<(u64, String)> = disk
            .list_dir(dir)?
            .into_iter()
            .filter_map(|n| segment_id(&n).map(|id| (id, n)))
            .collect();
        ids.sort();
        let mut log = RaftLog {
            disk: disk.clone(),
            dir: dir.to_path_buf(),
            dir_file,
            opts,
            segs: VecDeque::new(),
            index: BTreeMap::new(),
            vote: None,
            committed: None,
            purged: None,
            dir_dirty: false,
        };
        let mut rec = Recovery::default();
        fn repair(rec: &mut Recovery, msg: String) {
            log::warn!("raft log: {msg}");
            rec.repairs.push(msg);
        }
        let mut set_aside = Vec::new();
        for (i, (id, name)) in ids.iter().enumerate() {
            let path = dir.join(name);
            let map = disk.open_mapped(&path)?;
            let size = map.len();
            // SAFETY: the whole mapping; nothing writes to it during the scan.
            let data = unsafe { std::slice::from_raw_parts(map.as_ptr(), size) };
            if size < HEADER_LEN || data[..HEADER_LEN].iter().all(|&b| b == 0) {
                // Its creation was cut short: nothing in it was ever synced.
                set_aside.extend(ids[i..].iter().map(|(_, n)| n.clone()));
                break;
            }
            if &data[0..8] != MAGIC {
                return Err(invalid(&path, "not a warren Raft log segment (bad magic)"));
            }
            let version = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
            if version != FORMAT_VERSION {
                return Err(invalid(
                    &path,
                    format!("Raft log format version {version}, this warren reads version {FORMAT_VERSION}"),
                ));
            }
            let hid = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
            if hid != *id {
                return Err(invalid(&path, format!("holds segment {hid}, named {id}")));
            }
            let prev_end = u64::from_le_bytes(data[24..32].try_into().expect("8 bytes"));
            if let Some(prev) = log.segs.back() {
                if prev.id + 1 != *id {
                    repair(
                        &mut rec,
                        format!(
                            "segments {} to {} are missing (removed by a purge?)",
                            prev.id + 1,
                            id - 1
                        ),
                    );
                } else if prev.write_pos as u64 != prev_end {
                    // The previous segment lost records written before
                    // anything in this one: this one is not a continuation.
                    set_aside.extend(ids[i..].iter().map(|(_, n)| n.clone()));
                    break;
                }
            }
            let (records, end, how) = scan(data, &path)?;
            if let End::Cut(what) = how {
                repair(&mut rec, format!("{}: {what} cut off", path.display()));
            }
            log.segs.push_back(Seg {
                id: *id,
                path: path.clone(),
                map: map.clone(),
                write_pos: end,
                sealed: true,
                max_index: None,
                dirty: false,
            });
            for (at, total) in records {
                let payload = &data[at + RECORD_PREFIX..at + total];
                let r =
                    parse(payload).ok_or_else(|| invalid(&path, format!("unknown record at offset {at}")))?;
                log.apply(r, *id, at + RECORD_PREFIX);
            }
        }
        for name in set_aside {
            let from = dir.join(&name);
            let to = dir.join(format!("{name}.dropped"));
            repair(
                &mut rec,
                format!(
                    "{}: follows a torn tail (or was never completely created): set aside as {}",
                    from.display(),
                    to.display()
                ),
            );
            disk.rename(&from, &to)?;
        }
        // The last segment takes the appends: clear whatever a crash left
        // after its records (stale bytes of lost writes) first.
        if let Some(last) = log.segs.back_mut() {
            let size = last.map.len();
            // SAFETY: the mapping; no reference into it is held.
            let data = unsafe { std::slice::from_raw_parts_mut(last.map.as_ptr(), size) };
            let tail = &mut data[last.write_pos..];
            if let Some(nz) = tail.iter().rposition(|&b| b != 0) {
                tail[..=nz].fill(0);
                last.map.sync()?;
            }
            last.sealed = false;
        }
        if let (Some(first), Some(last)) = (log.index.keys().next(), log.index.keys().next_back()) {
            let n = log.index.len() as u64;
            if last - first + 1 != n {
                let hole = log
                    .index
                    .keys()
                    .zip(log.index.keys().skip(1))
                    .find(|(a, b)| **a + 1 != **b)
                    .map(|(a, _)| *a + 1)
                    .unwrap_or(*first);
                return Err(invalid(
                    dir,
                    format!("the Raft log has a hole at index {hole} (a segment is missing)"),
                ));
            }
        }
        log.dir_file.sync()?;
        rec.segments = log.segs.len();
        rec.entries = log.index.len();
        Ok((log, rec))
    }

    /// The effect of a record on the state (live and at recovery alike).
    fn apply(&mut self, r: Rec<'_>, seg: u64, payload_off: usize) {
        match r {
            Rec::Entry(index, bytes) => {
                // An entry at an index already held replaces it and every
                // later one (openraft truncates first; this keeps both the
                // same if it does not).
                self.cut(index);
                self.index.insert(
                    index,
                    Loc {
                        seg,
                        off: payload_off + 9,
                        len: bytes.len() as u32,
                    },
                );
                let s = self.seg_mut(seg);
                s.max_index = Some(s.max_index.map_or(index, |m| m.max(index)));
            }
            Rec::Truncate(from) => self.cut(from),
            Rec::Purge(index, id) => {
                if self.purged.as_ref().is_some_and(|(p, _)| *p > index) {
                    return;
                }
                self.index = self.index.split_off(&index.saturating_add(1));
                if index == u64::MAX {
                    self.index.clear();
                }
                self.purged = Some((index, id.to_vec()));
            }
            Rec::Vote(v) => self.vote = Some(v.to_vec()),
            Rec::Committed(c) => self.committed = Some(c.to_vec()),
        }
    }

    /// Drops the entries at `from` and after. The segments holding them
    /// no longer count them: a segment is removable once its live entries
    /// are purged.
    fn cut(&mut self, from: u64) {
        if self.index.range(from..).next().is_none() {
            return;
        }
        self.index.split_off(&from);
        for s in self.segs.iter_mut().rev() {
            match s.max_index {
                Some(m) if m >= from => s.max_index = from.checked_sub(1),
                Some(_) => break,
                None => {}
            }
        }
    }

    fn seg(&self, id: u64) -> &Seg {
        let i = self
            .segs
            .binary_search_by_key(&id, |s| s.id)
            .expect("a segment of the log");
        &self.segs[i]
    }

    fn seg_mut(&mut self, id: u64) -> &mut Seg {
        let i = self
            .segs
            .binary_search_by_key(&id, |s| s.id)
            .expect("a segment of the log");
        &mut self.segs[i]
    }

    /// Writes one record made of `parts`; returns (segment, payload offset).
    fn write(&mut self, parts: &[&[u8]]) -> io::Result<(u64, usize)> {
        let plen: usize = parts.iter().map(|p| p.len()).sum();
        if plen > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Raft log record too large",
            ));
        }
        let total = RECORD_PREFIX + plen;
        if self.segs.back().is_none_or(|s| s.room() < total) {
            self.roll(total)?;
        }
        Ok(self.write_in_head(parts, plen))
    }

    fn write_in_head(&mut self, parts: &[&[u8]], plen: usize) -> (u64, usize) {
        let seg = self.segs.back_mut().expect("a head segment");
        let total = RECORD_PREFIX + plen;
        assert!(total <= seg.room(), "record does not fit");
        let at = seg.write_pos;
        // SAFETY: [at, at + total) lies in the mapping, above the write
        // position: nothing reads it and no slice of it is held.
        let dst = unsafe { std::slice::from_raw_parts_mut(seg.map.as_ptr().add(at), total) };
        dst[0..4].copy_from_slice(&(plen as u32).to_le_bytes());
        let mut p = RECORD_PREFIX;
        for part in parts {
            dst[p..p + part.len()].copy_from_slice(part);
            p += part.len();
        }
        let crc = checksum(&dst[0..4], &dst[RECORD_PREFIX..]);
        dst[4..8].copy_from_slice(&crc.to_le_bytes());
        seg.write_pos += total;
        seg.dirty = true;
        (seg.id, at + RECORD_PREFIX)
    }

    /// Starts a new segment with room for the state and a record of `total`
    /// bytes. The current head is sealed.
    fn roll(&mut self, total: usize) -> io::Result<()> {
        let purge_hdr = self.purged.as_ref().map(|(i, _)| {
            let mut h = [0u8; 9];
            h[0] = PURGE;
            h[1..].copy_from_slice(&i.to_le_bytes());
            h
        });
        let state_len = self
            .purged
            .as_ref()
            .map_or(0, |(_, b)| RECORD_PREFIX + 9 + b.len())
            + self.vote.as_ref().map_or(0, |v| RECORD_PREFIX + 1 + v.len())
            + self.committed.as_ref().map_or(0, |c| RECORD_PREFIX + 1 + c.len());
        let size = self.opts.segment_size.max(HEADER_LEN + state_len + total);
        let (id, prev_end) = match self.segs.back() {
            Some(s) => (s.id + 1, s.write_pos as u64),
            None => (self.next_free_id(), 0),
        };
        let path = self.dir.join(segment_name(id));
        let map = self.disk.create_mapped(&path, size)?;
        let mut header = [0u8; HEADER_LEN];
        header[0..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&id.to_le_bytes());
        header[24..32].copy_from_slice(&prev_end.to_le_bytes());
        // SAFETY: the header range of a fresh mapping nobody else references.
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), map.as_ptr(), HEADER_LEN) };
        if let Some(head) = self.segs.back_mut() {
            head.sealed = true;
        }
        self.segs.push_back(Seg {
            id,
            path,
            map,
            write_pos: HEADER_LEN,
            sealed: false,
            max_index: None,
            dirty: true,
        });
        self.dir_dirty = true;
        // The state as it stands, so older segments can go.
        if let (Some(h), Some((_, b))) = (purge_hdr, self.purged.clone()) {
            self.write_in_head(&[&h, &b], 9 + b.len());
        }
        if let Some(v) = self.vote.clone() {
            self.write_in_head(&[&[VOTE], &v], 1 + v.len());
        }
        if let Some(c) = self.committed.clone() {
            self.write_in_head(&[&[COMMITTED], &c], 1 + c.len());
        }
        Ok(())
    }

    /// The id for the first segment of an empty log: past any set-aside one.
    fn next_free_id(&self) -> u64 {
        self.disk
            .list_dir(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| segment_id(n.trim_end_matches(".dropped")))
            .max()
            .map_or(1, |m| m + 1)
    }

    /// Appends the entry at `index` (its bytes: the caller's encoding). An
    /// entry already held at `index` or after it is replaced (truncated).
    /// An entry at or below the purge point is refused (Raft never writes
    /// one; a segment's state records would purge it again).
    pub fn append(&mut self, index: u64, entry: &[u8]) -> io::Result<()> {
        if let Some((p, _)) = &self.purged
            && index <= *p
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("Raft log: entry {index} is at or below the purge point {p}"),
            ));
        }
        let (seg, off) = self.write(&[&[ENTRY], &index.to_le_bytes(), entry])?;
        self.apply(Rec::Entry(index, entry), seg, off);
        Ok(())
    }

    /// Removes the entries at `from` and after.
    pub fn truncate(&mut self, from: u64) -> io::Result<()> {
        if self.index.range(from..).next().is_none() {
            return Ok(());
        }
        let (seg, off) = self.write(&[&[TRUNCATE], &from.to_le_bytes()])?;
        self.apply(Rec::Truncate(from), seg, off);
        Ok(())
    }

    /// Removes the entries up to `index` (inclusive); `log_id` (the
    /// caller's encoding) is the last purged entry's id. A purge below an
    /// earlier one is a no-op. Segments are removed later, by
    /// [`RaftLog::detach_purged`], once this is durable.
    pub fn purge(&mut self, index: u64, log_id: &[u8]) -> io::Result<()> {
        if self.purged.as_ref().is_some_and(|(p, _)| *p > index) {
            return Ok(());
        }
        let (seg, off) = self.write(&[&[PURGE], &index.to_le_bytes(), log_id])?;
        self.apply(Rec::Purge(index, log_id), seg, off);
        Ok(())
    }

    pub fn set_vote(&mut self, vote: &[u8]) -> io::Result<()> {
        let (seg, off) = self.write(&[&[VOTE], vote])?;
        self.apply(Rec::Vote(vote), seg, off);
        Ok(())
    }

    pub fn set_committed(&mut self, committed: &[u8]) -> io::Result<()> {
        let (seg, off) = self.write(&[&[COMMITTED], committed])?;
        self.apply(Rec::Committed(committed), seg, off);
        Ok(())
    }

    /// The bytes of the entry at `index`.
    pub fn entry(&self, index: u64) -> Option<&[u8]> {
        self.index.get(&index).map(|l| self.bytes(l))
    }

    fn bytes(&self, l: &Loc) -> &[u8] {
        &self.seg(l.seg).written()[l.off..l.off + l.len as usize]
    }

    /// The entries in `range`, in index order (an inverted range is empty).
    pub fn entries(&self, range: impl RangeBounds<u64>) -> impl Iterator<Item = (u64, &[u8])> {
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1).map_or(Bound::Unbounded, Bound::Excluded),
            Bound::Excluded(&e) => Bound::Excluded(e),
            Bound::Unbounded => Bound::Unbounded,
        };
        let empty = match (start, end) {
            (None, _) => true,
            (Some(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        };
        let iter = (!empty).then(|| {
            self.index
                .range((Bound::Included(start.unwrap_or(0)), end))
                .map(|(i, l)| (*i, self.bytes(l)))
        });
        iter.into_iter().flatten()
    }

    pub fn first_index(&self) -> Option<u64> {
        self.index.keys().next().copied()
    }
    pub fn last_index(&self) -> Option<u64> {
        self.index.keys().next_back().copied()
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    pub fn vote(&self) -> Option<&[u8]> {
        self.vote.as_deref()
    }
    pub fn committed(&self) -> Option<&[u8]> {
        self.committed.as_deref()
    }
    /// The last purged index and its id.
    pub fn purged(&self) -> Option<(u64, &[u8])> {
        self.purged.as_ref().map(|(i, b)| (*i, b.as_slice()))
    }
    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// The files written since the last call, to sync (`begin_sync` on the
    /// owner's thread, then `sync`, anywhere). What every call before this
    /// one wrote is durable once they all synced.
    pub fn take_sync(&mut self) -> Vec<Arc<dyn Syncable>> {
        let mut out: Vec<Arc<dyn Syncable>> = Vec::new();
        for s in self.segs.iter_mut().filter(|s| s.dirty) {
            s.dirty = false;
            out.push(s.map.clone());
        }
        if std::mem::take(&mut self.dir_dirty) {
            out.push(self.dir_file.clone());
        }
        out
    }

    /// Forgets the oldest segments whose entries are all at or below the
    /// purge point `upto` (never the head), and returns their paths, for
    /// [`remove_segments`]. Call it only once the purge to `upto` is
    /// durable: a segment holds entries the purge record must outlive.
    pub fn detach_purged(&mut self, upto: u64) -> Vec<PathBuf> {
        let upto = upto.min(self.purged.as_ref().map_or(0, |(p, _)| *p));
        if self.purged.is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        while self.segs.len() > 1
            && self
                .segs
                .front()
                .is_some_and(|s| s.max_index.is_none_or(|m| m <= upto))
        {
            let s = self.segs.pop_front().expect("a segment");
            out.push(s.path);
        }
        out
    }

    /// The disk and the directory, for [`remove_segments`] off the owner's thread.
    pub fn disk(&self) -> (Arc<dyn Disk>, Arc<dyn Syncable>) {
        (self.disk.clone(), self.dir_file.clone())
    }
}

/// Removes detached segments, oldest first, syncing the directory after
/// each: what remains is always a run of consecutive segments.
pub fn remove_segments(disk: &dyn Disk, dir: &dyn Syncable, paths: &[PathBuf]) -> io::Result<()> {
    for p in paths {
        disk.remove_file(p)?;
        dir.sync()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
