//! The storage-recovery harness: a queue store's segments and ack logs and
//! the topology log, built from the input on a simulated disk, recovered
//! twice.

use crate::storage::acklog::{ACK_MAGIC, AckLog, ack_name};
use crate::storage::record::{self, Scan};
use crate::storage::segment::{FORMAT_VERSION, HEADER_LEN, SEGMENT_MAGIC, segment_name};
use crate::storage::topolog::{self, TopoLog};
use crate::storage::{Disk, QueueStore, SimDisk};
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const QUEUE_DIR: &str = "/fuzz/data/queues/1";
const DATA_DIR: &str = "/fuzz/data";
/// The queue store's segment size (what a pre-allocated segment is padded
/// to, and what new segments get).
const SEGMENT_SIZE: usize = 4096;

/// What one input builds.
#[derive(Default)]
pub struct Files {
    /// Segment id → (segment image, ack log image if any).
    pub segments: BTreeMap<u64, (Vec<u8>, Option<Vec<u8>>)>,
    pub topology: Option<Vec<u8>>,
}

/// Entry kinds of the input (see [`segment_recovery`]).
pub mod kind {
    pub const RAW: u8 = 0;
    pub const RECORD: u8 = 1;
    pub const ACK_RAW: u8 = 2;
    pub const TOPO_RECORD: u8 = 3;
    pub const TOPO_RAW: u8 = 4;
    pub const NEXT_SEGMENT: u8 = 5;
    pub const ACK_RECORDS: u8 = 6;
    pub const COUNT: u8 = 7;
}

/// Mode bits of the input's first byte.
pub mod mode {
    pub const SEGMENT_HEADER: u8 = 1;
    pub const PREALLOCATE: u8 = 2;
    pub const ACK_HEADER: u8 = 4;
    pub const TOPO_HEADER: u8 = 8;
}

/// `len:u32le crc:u32le payload`, the framing of message and topology
/// records, with a correct checksum.
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The ack log being built, started (with a header if the mode says so).
fn ack_log(acks: &mut Option<Vec<u8>>, m: u8) -> &mut Vec<u8> {
    acks.get_or_insert_with(|| {
        let mut h = Vec::new();
        if m & mode::ACK_HEADER != 0 {
            h.extend_from_slice(ACK_MAGIC);
            h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            h.extend_from_slice(&[0; 4]);
        }
        h
    })
}

/// Builds the files an input describes: a mode byte, then entries
/// `kind:u8 len:u16le bytes[len]` (cut short at the end of the input).
pub fn build(data: &[u8]) -> Files {
    let mut files = Files::default();
    let Some((&m, mut rest)) = data.split_first() else {
        return files;
    };
    let new_segment = |id: u64| {
        let mut img = Vec::new();
        if m & mode::SEGMENT_HEADER != 0 {
            img.extend_from_slice(SEGMENT_MAGIC);
            img.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            img.extend_from_slice(&[0; 4]);
            img.extend_from_slice(&id.to_le_bytes());
            img.extend_from_slice(&1u64.to_le_bytes());
        }
        img
    };
    let mut id = 1u64;
    let mut seg = new_segment(id);
    let mut acks: Option<Vec<u8>> = None;
    // Offsets of the records written with a correct checksum.
    let mut records: Vec<u32> = Vec::new();
    let mut topo: Option<Vec<u8>> = None;
    while let Some((&k, r)) = rest.split_first() {
        let len = match r {
            [a, b, ..] => u16::from_le_bytes([*a, *b]) as usize,
            [a] => *a as usize,
            [] => 0,
        };
        let r = &r[r.len().min(2)..];
        let (bytes, r) = r.split_at(len.min(r.len()));
        rest = r;
        match k % kind::COUNT {
            kind::RAW => seg.extend_from_slice(bytes),
            kind::RECORD => {
                records.push(seg.len() as u32);
                seg.extend_from_slice(&framed(bytes));
            }
            kind::ACK_RAW => ack_log(&mut acks, m).extend_from_slice(bytes),
            kind::TOPO_RECORD | kind::TOPO_RAW => {
                let t = topo.get_or_insert_with(|| {
                    let mut h = Vec::new();
                    if m & mode::TOPO_HEADER != 0 {
                        h.extend_from_slice(b"WRNTOPO\0");
                        h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
                        h.extend_from_slice(&[0; 4]);
                    }
                    h
                });
                if k % kind::COUNT == kind::TOPO_RECORD {
                    t.extend_from_slice(&framed(bytes));
                } else {
                    t.extend_from_slice(bytes);
                }
            }
            kind::NEXT_SEGMENT => {
                let done = std::mem::take(&mut seg);
                files.segments.insert(id, (done, acks.take()));
                records.clear();
                id += 1 + len as u64 % 3;
                seg = new_segment(id);
            }
            _ => {
                // ACK_RECORDS: each byte names a checksummed record of this
                // segment (bit 7: delivered rather than acked).
                for &b in bytes {
                    if let Some(&off) = records.get((b & 0x7f) as usize) {
                        let v = if b & 0x80 != 0 { off | 1 << 31 } else { off };
                        ack_log(&mut acks, m).extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
    }
    files.segments.insert(id, (seg, acks));
    if m & mode::PREALLOCATE != 0 {
        for (img, _) in files.segments.values_mut() {
            if img.len() < SEGMENT_SIZE {
                img.resize(SEGMENT_SIZE, 0);
            }
        }
    }
    files.topology = topo;
    files
}

/// A recovered message, comparable.
#[derive(Debug, PartialEq, Eq)]
struct Got {
    segment: u64,
    offset: u32,
    exchange: Vec<u8>,
    routing_key: Vec<u8>,
    props: Vec<u8>,
    body: Vec<u8>,
    redelivered: bool,
    timestamp_ms: u64,
}

fn open_store(disk: &SimDisk) -> Result<Vec<Got>, String> {
    let (store, recovered) = QueueStore::open(Arc::new(disk.clone()), Path::new(QUEUE_DIR), 1, SEGMENT_SIZE)
        .map_err(|e| e.to_string())?;
    drop(store);
    Ok(recovered
        .into_iter()
        .map(|r| Got {
            segment: r.loc.segment(),
            offset: r.loc.offset(),
            exchange: r.msg.exchange().to_vec(),
            routing_key: r.msg.routing_key().to_vec(),
            props: r.msg.props().to_vec(),
            body: r.msg.body().to_vec(),
            redelivered: r.redelivered,
            timestamp_ms: r.timestamp_ms,
        })
        .collect())
}

fn open_topology(disk: &SimDisk) -> Result<Vec<u8>, String> {
    let (_log, changes) = TopoLog::open(disk, Path::new(DATA_DIR)).map_err(|e| e.to_string())?;
    let mut out = BytesMut::new();
    for c in &changes {
        topolog::encode(c, &mut out);
    }
    Ok(out.to_vec())
}

/// Property: recovery of arbitrary segment files, ack logs and topology
/// logs never panics; every message it recovers is a valid (checksummed)
/// record of the original file at its offset, not acked, redelivered
/// exactly when its ack log says it was delivered, in file order; every
/// valid record from a segment's header up to the first damage is
/// recovered unless acked (the valid prefix is never lost); and a second
/// recovery after the first (which repairs what it found) gives the same
/// messages, and the same topology.
///
/// Input: a mode byte ([`mode`]: valid segment, ack-log and topology
/// headers; segments padded with zeroes to the segment size, as
/// pre-allocated ones are), then entries `kind:u8 len:u16le bytes`
/// ([`kind`]): raw segment bytes, a record with a correct checksum around
/// the bytes (so the parsers behind the checksum are reached), raw ack-log
/// bytes, acks or deliveries of the checksummed records by index, a
/// topology record (checksummed) or raw topology bytes, the next segment.
pub fn segment_recovery(data: &[u8]) {
    let files = build(data);
    let disk = SimDisk::new(7);
    let qdir = PathBuf::from(QUEUE_DIR);
    disk.create_dir_all(&qdir).expect("sim dirs");
    for (id, (img, acks)) in &files.segments {
        disk.write_synced(&qdir.join(segment_name(*id)), img)
            .expect("sim write");
        if let Some(a) = acks {
            disk.write_synced(&qdir.join(ack_name(*id)), a)
                .expect("sim write");
        }
    }
    if let Some(t) = &files.topology {
        disk.write_synced(&Path::new(DATA_DIR).join("topology.log"), t)
            .expect("sim write");
    }
    // What the ack logs say, read before recovery may remove them.
    let mut ack_state = BTreeMap::new();
    for id in files.segments.keys() {
        ack_state.insert(*id, AckLog::load(&disk, &qdir.join(ack_name(*id))).ok());
    }

    let first = open_store(&disk);
    if let Ok(got) = &first {
        let mut last: Option<(u64, u32)> = None;
        for g in got {
            assert!(last < Some((g.segment, g.offset)), "recovered out of order");
            last = Some((g.segment, g.offset));
            let (img, _) = &files.segments[&g.segment];
            let at = g.offset as usize;
            let Scan::Record(v) = record::scan(&img[at..]) else {
                panic!(
                    "recovered a message at {at} of segment {} where no valid record is",
                    g.segment
                )
            };
            let part = |r: &std::ops::Range<usize>| img[at + r.start..at + r.end].to_vec();
            assert_eq!(
                (&g.exchange, &g.routing_key, &g.props, &g.body, g.timestamp_ms),
                (
                    &part(&v.exchange),
                    &part(&v.routing_key),
                    &part(&v.props),
                    &part(&v.body),
                    v.timestamp_ms
                )
            );
            let st = ack_state[&g.segment]
                .as_ref()
                .expect("a store that opened read its ack logs");
            assert!(!st.acked.contains(&g.offset), "an acked message came back");
            assert_eq!(g.redelivered, st.delivered.contains(&g.offset));
        }
        // The valid prefix of every well-formed segment is recovered.
        for (id, (img, _)) in &files.segments {
            if img.len() < HEADER_LEN || img[0..8] != *SEGMENT_MAGIC {
                continue;
            }
            let Some(st) = ack_state[id].as_ref() else {
                continue;
            };
            let mut pos = HEADER_LEN;
            let mut want = Vec::new();
            while let Scan::Record(v) = record::scan(&img[pos..]) {
                if !st.acked.contains(&(pos as u32)) {
                    want.push(pos as u32);
                }
                pos += v.total;
            }
            let have: Vec<u32> = got
                .iter()
                .filter(|g| g.segment == *id)
                .map(|g| g.offset)
                .collect();
            assert!(
                have.starts_with(&want),
                "segment {id}: valid records {want:?} but recovered {have:?}"
            );
        }
    }
    let second = open_store(&disk);
    assert_eq!(first, second, "a second recovery differs from the first");

    let first = open_topology(&disk);
    let second = open_topology(&disk);
    assert_eq!(first, second, "a second topology recovery differs from the first");
}
