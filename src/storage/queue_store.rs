//! The message store of one durable queue: a directory of segments with
//! their ack logs. Owned by the queue's shard.

use super::acklog::{AckLog, ack_name};
use super::disk::{Disk, Syncable};
use super::record;
use super::segment::{HEADER_LEN, Segment, segment_name};
use crate::ids::Loc;
use crate::message::Message;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A message read back at recovery.
pub struct Recovered {
    pub loc: Loc,
    pub msg: Message,
    pub redelivered: bool,
    pub timestamp_ms: u64,
}

struct Seg {
    seg: Segment,
    acks: AckLog,
    /// Appended since the last sync was taken.
    unsynced: bool,
}

/// A durable queue's segments. Owned by the queue's shard.
pub struct QueueStore {
    pub queue: u64,
    disk: Arc<dyn Disk>,
    dir: PathBuf,
    dir_file: Arc<dyn Syncable>,
    segment_size: usize,
    segs: BTreeMap<u64, Seg>,
    /// A file was created or removed since the last sync: the directory
    /// must be synced too.
    dir_dirty: bool,
}

fn message_from(region: &bytes::Bytes, base: usize, off: usize, v: &record::RecordView) -> Message {
    let rel = |r: &std::ops::Range<usize>| (r.start + off - base)..(r.end + off - base);
    let buf = region.slice(off - base..off - base + v.total);
    let shift = |r: std::ops::Range<usize>| (r.start - (off - base))..(r.end - (off - base));
    let m = Message::from_ranges(
        buf,
        shift(rel(&v.exchange)),
        shift(rel(&v.routing_key)),
        shift(rel(&v.props)),
        shift(rel(&v.body)),
    );
    let mut m = m.with_properties_from_raw();
    m.persistent = true;
    m
}

impl QueueStore {
    /// The directory of a queue's store under the data dir.
    pub fn dir_for(data_dir: &Path, queue: u64) -> PathBuf {
        data_dir.join("queues").join(queue.to_string())
    }

    /// Opens (or creates) a queue's store and reads back every message not
    /// acked, in order.
    pub fn open(
        disk: Arc<dyn Disk>,
        dir: &Path,
        queue: u64,
        segment_size: usize,
    ) -> io::Result<(QueueStore, Vec<Recovered>)> {
        disk.create_dir_all(dir)?;
        let dir_file = disk.open_dir(dir)?;
        let names = disk.list_dir(dir)?;
        // A cut of a torn ack log that a crash left before its rename
        // (see [`AckLog::recover`]): the log it was cut from is still whole
        // enough to recover from.
        for name in names.iter().filter(|n| n.ends_with(".cut")) {
            let _ = disk.remove_file(&dir.join(name));
        }
        let mut ids: Vec<u64> = names
            .iter()
            .filter_map(|name| name.strip_prefix("msgs.").and_then(|s| s.parse().ok()))
            .collect();
        ids.sort_unstable();
        let mut store = QueueStore {
            queue,
            disk: disk.clone(),
            dir: dir.to_path_buf(),
            dir_file,
            segment_size,
            segs: BTreeMap::new(),
            // The directory's entries may never have been synced (a crash
            // right after a segment was created, or a failed sync before
            // the restart): sync it before the first confirm.
            dir_dirty: true,
        };
        let mut out = Vec::new();
        for id in ids {
            let path = dir.join(segment_name(id));
            let Some((mut seg, found, repair)) = Segment::open(&*disk, &path, id)? else {
                log::warn!("{}: segment creation was cut short; removed", path.display());
                let _ = disk.remove_file(&path);
                let _ = disk.remove_file(&dir.join(ack_name(id)));
                continue;
            };
            for off in &repair.skipped {
                log::warn!("{}: corrupt record at offset {off} skipped", path.display());
            }
            if let Some(off) = repair.truncated_at {
                log::warn!(
                    "{}: torn or corrupt tail truncated at offset {off}",
                    path.display()
                );
            }
            let acks = AckLog::recover(&*disk, &dir.join(ack_name(id)))?;
            let region = seg.region(HEADER_LEN, seg.write_pos());
            let mut live = 0;
            for f in &found {
                if acks.acked.contains(&f.offset) {
                    continue;
                }
                live += 1;
                out.push(Recovered {
                    loc: Loc::new(id, f.offset),
                    msg: message_from(&region, HEADER_LEN, f.offset as usize, &f.view),
                    redelivered: acks.delivered.contains(&f.offset),
                    timestamp_ms: f.view.timestamp_ms,
                });
            }
            seg.live = live;
            store.segs.insert(
                id,
                Seg {
                    seg,
                    acks: AckLog::new(dir, id),
                    unsynced: false,
                },
            );
        }
        // Segments recovered from an earlier run are never appended to
        // again: a crash may have left records of that run past the point
        // where recovery stopped (torn, or cut off by a hole), which a
        // record appended there now would put behind it — and the ack log
        // may hold marks for offsets it would reuse. New records go to a
        // new segment; the old ones go once everything in them is acked.
        for s in store.segs.values_mut() {
            s.seg.seal();
        }
        let empty: Vec<u64> = store
            .segs
            .iter()
            .filter(|(_, s)| s.seg.live == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in empty {
            store.remove_segment(id);
        }
        // An ack log whose segment is gone (a crash between removing the
        // two files) would mark records of a new segment with its number.
        for name in disk.list_dir(dir)? {
            if let Some(id) = name.strip_prefix("acks.").and_then(|s| s.parse::<u64>().ok())
                && !store.segs.contains_key(&id)
            {
                let _ = disk.remove_file(&dir.join(&name));
            }
        }
        Ok((store, out))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn current(&mut self, need: usize) -> io::Result<&mut Seg> {
        let fits = self
            .segs
            .values()
            .next_back()
            .is_some_and(|s| s.seg.remaining() >= need);
        if !fits {
            let id = self.segs.keys().next_back().map_or(1, |k| k + 1);
            let size = self.segment_size.max(HEADER_LEN + need);
            let seg = Segment::create(&*self.disk, &self.dir, id, self.queue, size)?;
            self.segs.insert(
                id,
                Seg {
                    seg,
                    acks: AckLog::new(&self.dir, id),
                    unsynced: true,
                },
            );
            self.dir_dirty = true;
        }
        Ok(self.segs.values_mut().next_back().expect("a segment"))
    }

    /// Appends messages in order; returns each one's location and a copy of
    /// it that borrows the segment (so the original buffer can be freed).
    pub fn append_batch(
        &mut self,
        msgs: impl IntoIterator<Item = Message>,
        timestamp_ms: u64,
        out: &mut Vec<(Loc, Message)>,
    ) -> io::Result<()> {
        // (segment id, offset, record view) of each append, then one region
        // per segment to slice them from.
        let mut placed: Vec<(u64, u32, record::RecordView)> = Vec::new();
        // A batch is all or nothing: where the last segment stood, and which
        // segments it created, to undo a batch a full disk cut short.
        let before = self.segs.last_key_value().map(|(id, s)| (*id, s.seg.mark()));
        for m in msgs {
            let len = record::encoded_len(&m);
            let s = match self.current(len) {
                Ok(s) => s,
                Err(e) => {
                    self.undo_batch(before);
                    return Err(e);
                }
            };
            let off = s
                .seg
                .append(len, |dst| record::encode(&m, timestamp_ms, dst))
                .expect("room was ensured");
            s.unsynced = true;
            placed.push((s.seg.id, off, record::layout(&m, 0)));
        }
        let mut i = 0;
        while i < placed.len() {
            let seg_id = placed[i].0;
            let mut j = i;
            while j < placed.len() && placed[j].0 == seg_id {
                j += 1;
            }
            let s = &self.segs[&seg_id];
            let base = placed[i].1 as usize;
            let end = placed[j - 1].1 as usize + placed[j - 1].2.total;
            let region = s.seg.region(base, end);
            for (sid, off, view) in &placed[i..j] {
                out.push((
                    Loc::new(*sid, *off),
                    message_from(&region, base, *off as usize, view),
                ));
            }
            i = j;
        }
        Ok(())
    }

    /// Takes back a batch that failed part-way: segments it created go,
    /// the one it started in is cut back to where it stood (zeroed, so a
    /// recovery does not find the records a nack refused).
    fn undo_batch(&mut self, before: Option<(u64, super::segment::Mark)>) {
        let created: Vec<u64> = self
            .segs
            .keys()
            .copied()
            .filter(|id| before.is_none_or(|(b, _)| *id > b))
            .collect();
        for id in created {
            self.remove_segment(id);
        }
        if let Some((id, mark)) = before
            && let Some(s) = self.segs.get_mut(&id)
        {
            s.seg.cut_back(mark);
        }
    }

    /// Records a first delivery (so a crash brings it back redelivered).
    pub fn delivered(&mut self, loc: Loc) {
        if let Some(s) = self.segs.get_mut(&loc.segment()) {
            s.acks.delivered(loc.offset());
        }
    }

    /// Records that a message is gone (acked, purged, dropped); deletes its
    /// segment once nothing in it is left.
    pub fn remove(&mut self, loc: Loc) {
        let id = loc.segment();
        let last = self.segs.keys().next_back().copied();
        let Some(s) = self.segs.get_mut(&id) else {
            return;
        };
        s.acks.acked(loc.offset());
        s.seg.live = s.seg.live.saturating_sub(1);
        if s.seg.live == 0 && Some(id) != last {
            self.remove_segment(id);
        }
    }

    fn remove_segment(&mut self, id: u64) {
        if let Some(s) = self.segs.remove(&id) {
            let _ = self.disk.remove_file(&s.seg.path);
            let _ = self.disk.remove_file(s.acks.path());
            self.dir_dirty = true;
        }
    }

    /// Writes buffered ack-log entries (one write per touched log).
    pub fn flush(&mut self) -> io::Result<()> {
        for s in self.segs.values_mut() {
            if s.acks.flush(&*self.disk)? {
                self.dir_dirty = true;
            }
        }
        Ok(())
    }

    /// Whether messages or names were written since the last
    /// [`QueueStore::take_sync`]: a confirm may wait on them.
    pub fn needs_sync(&self) -> bool {
        self.dir_dirty || self.segs.values().any(|s| s.unsynced)
    }

    /// Whether an ack log was written since its last sync. Nothing waits on
    /// an ack log (losing its tail brings acked messages back as
    /// redeliveries, never loses one), so the owner syncs them on a slow
    /// tick instead of once per ack.
    pub fn acks_unsynced(&self) -> bool {
        self.segs.values().any(|s| s.acks.unsynced)
    }

    /// The files a sync must cover for every message and name written so
    /// far, and with `acks` the ack logs too; marks them synced (the caller
    /// must complete the sync before confirming).
    pub fn take_sync(&mut self, acks: bool, out: &mut Vec<Arc<dyn Syncable>>) {
        for s in self.segs.values_mut() {
            if s.unsynced {
                s.unsynced = false;
                out.push(s.seg.file());
            }
            if acks && s.acks.unsynced {
                s.acks.unsynced = false;
                out.extend(s.acks.file());
            }
        }
        if self.dir_dirty {
            self.dir_dirty = false;
            out.push(self.dir_file.clone());
        }
    }

    /// Bytes on disk (segments are pre-allocated, so this is their sizes).
    pub fn disk_bytes(&self) -> u64 {
        self.segs.values().map(|s| s.seg.size() as u64).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// Deletes the store (queue deleted).
    pub fn destroy(self) {
        let (disk, dir) = (self.disk.clone(), self.dir.clone());
        drop(self);
        if let Err(e) = disk.remove_dir_all(&dir) {
            log::warn!("cannot remove {}: {e}", dir.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::disk::RealDisk;
    use crate::storage::segment::segment_name;
    use std::io::{Seek, SeekFrom, Write};

    fn msg(i: u32) -> Message {
        let mut m = Message::assemble(b"ex", b"rk", b"\x00\x00", format!("body-{i}").as_bytes());
        m.persistent = true;
        m
    }

    fn append(store: &mut QueueStore, range: std::ops::Range<u32>) -> Vec<Loc> {
        let mut out = Vec::new();
        store.append_batch(range.map(msg), 1, &mut out).unwrap();
        out.into_iter().map(|(l, _)| l).collect()
    }

    fn bodies(r: &[Recovered]) -> Vec<String> {
        r.iter()
            .map(|x| String::from_utf8_lossy(x.msg.body()).into_owned())
            .collect()
    }

    #[test]
    fn roll_over_ack_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        assert!(rec.is_empty());
        let locs = append(&mut s, 0..300);
        assert!(
            s.segment_count() >= 3,
            "small segments roll over: {}",
            s.segment_count()
        );
        // Ack the first half; deliver one more without acking it.
        for l in &locs[..150] {
            s.remove(*l);
        }
        s.delivered(locs[150]);
        s.flush().unwrap();
        let segs_before = s.segment_count();
        drop(s);
        let (s, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        assert_eq!(rec.len(), 150);
        assert_eq!(bodies(&rec)[0], "body-150");
        assert!(rec[0].redelivered && !rec[1].redelivered);
        assert!(s.segment_count() <= segs_before, "fully acked segments are gone");
        assert_eq!(rec[0].msg.exchange(), b"ex");
        assert_eq!(rec[0].msg.routing_key(), b"rk");
    }

    #[test]
    fn big_message_gets_its_own_segment() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        let mut big = Message::assemble(b"", b"q", b"", &vec![9u8; 100_000]);
        big.persistent = true;
        let mut out = Vec::new();
        s.append_batch([big], 1, &mut out).unwrap();
        drop(s);
        let (_, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].msg.body_len(), 100_000);
    }

    fn seg_path(d: &std::path::Path, id: u64) -> std::path::PathBuf {
        d.join(segment_name(id))
    }

    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        let locs = append(&mut s, 0..10);
        drop(s);
        // Tear the last record: zero its second half, as a crash mid-write
        // would leave it.
        let last = locs[9].offset() as u64;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d.path(), 1))
            .unwrap();
        f.seek(SeekFrom::Start(last + 12)).unwrap();
        f.write_all(&[0u8; 16]).unwrap();
        drop(f);
        let (mut s, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        assert_eq!(
            bodies(&rec),
            (0..9).map(|i| format!("body-{i}")).collect::<Vec<_>>()
        );
        append(&mut s, 100..101);
        drop(s);
        let (_, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        assert_eq!(rec.len(), 10);
        assert_eq!(bodies(&rec)[9], "body-100");
    }

    #[test]
    fn corrupt_record_in_the_middle_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        let locs = append(&mut s, 0..5);
        drop(s);
        // Flip a byte in record 2's body: its CRC fails, its length holds.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d.path(), 1))
            .unwrap();
        f.seek(SeekFrom::Start(locs[2].offset() as u64 + 30)).unwrap();
        f.write_all(b"X").unwrap();
        drop(f);
        let (_, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        assert_eq!(bodies(&rec), vec!["body-0", "body-1", "body-3", "body-4"]);
    }

    #[test]
    fn zero_filled_preallocation_and_missing_ack_log() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        let locs = append(&mut s, 0..3);
        s.remove(locs[0]);
        s.flush().unwrap();
        drop(s);
        // The segment is pre-allocated: the rest of it is zeroes, and that
        // reads as the end, not as damage.
        assert_eq!(std::fs::metadata(seg_path(d.path(), 1)).unwrap().len(), 1 << 20);
        std::fs::remove_file(d.path().join(crate::storage::acklog::ack_name(1))).unwrap();
        let (_, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 1 << 20).unwrap();
        // Without its ack log the acked message comes back: at-least-once.
        assert_eq!(rec.len(), 3);
    }

    #[test]
    fn segment_cut_short_at_creation_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        append(&mut s, 0..2);
        drop(s);
        std::fs::write(seg_path(d.path(), 2), b"").unwrap();
        std::fs::write(seg_path(d.path(), 3), vec![0u8; 4096]).unwrap();
        let (_, rec) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        assert_eq!(rec.len(), 2);
        assert!(!seg_path(d.path(), 2).exists() && !seg_path(d.path(), 3).exists());
    }

    #[test]
    fn incompatible_segment_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _) = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096).unwrap();
        append(&mut s, 0..1);
        drop(s);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d.path(), 1))
            .unwrap();
        f.seek(SeekFrom::Start(8)).unwrap();
        f.write_all(&9u32.to_le_bytes()).unwrap();
        drop(f);
        let e = QueueStore::open(RealDisk::shared(), d.path(), 1, 4096)
            .err()
            .unwrap();
        assert!(e.to_string().contains("format version 9"), "{e}");
    }
}
