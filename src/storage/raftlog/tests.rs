//! Tests of the Raft log's format and recovery, on the simulated disk.

use super::*;
use crate::storage::{Disk, SimDisk};

fn dir() -> PathBuf {
    PathBuf::from("/data/raft")
}

fn open(disk: &SimDisk, seg: usize) -> io::Result<(RaftLog, Recovery)> {
    RaftLog::open(Arc::new(disk.clone()), &dir(), Options { segment_size: seg })
}

fn sync(log: &mut RaftLog) {
    let files = log.take_sync();
    for f in &files {
        f.begin_sync();
    }
    for f in &files {
        f.sync().unwrap();
    }
}

fn payload(i: u64, salt: u64) -> Vec<u8> {
    let n = ((i * 7 + salt) % 90) as usize + 1;
    (0..n).map(|k| (i as u8).wrapping_add(k as u8) | 1).collect()
}

/// The observable state of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    entries: Vec<(u64, Vec<u8>)>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<(u64, Vec<u8>)>,
}

fn state(log: &RaftLog) -> State {
    State {
        entries: log.entries(..).map(|(i, b)| (i, b.to_vec())).collect(),
        vote: log.vote().map(<[u8]>::to_vec),
        committed: log.committed().map(<[u8]>::to_vec),
        purged: log.purged().map(|(i, b)| (i, b.to_vec())),
    }
}

#[test]
fn writes_read_back_and_survive_a_reopen() {
    let disk = SimDisk::new(1);
    let (mut log, rec) = open(&disk, 1024).unwrap();
    assert_eq!(rec.segments, 0);
    log.set_vote(b"v1").unwrap();
    for i in 1..=100 {
        log.append(i, &payload(i, 0)).unwrap();
        assert_eq!(log.entry(i), Some(&payload(i, 0)[..]));
    }
    assert!(log.segment_count() > 3, "small segments roll");
    log.truncate(61).unwrap();
    for i in 61..=70 {
        log.append(i, &payload(i, 1)).unwrap();
    }
    log.set_committed(b"c60").unwrap();
    log.purge(20, b"p20").unwrap();
    sync(&mut log);
    let before = state(&log);
    assert_eq!(before.entries.len(), 50);
    assert_eq!(before.entries[0].0, 21);
    drop(log);
    disk.crash_power();
    let (log, rec) = open(&disk, 1024).unwrap();
    assert!(rec.repairs.is_empty(), "{:?}", rec.repairs);
    assert_eq!(state(&log), before);
    let (a, b) = (30, 29);
    assert_eq!(log.entries(a..=b).count(), 0, "an inverted range is empty");
    assert_eq!(log.entries(65..).count(), 6);
}

#[test]
fn purged_segments_go_and_the_state_stays() {
    let disk = SimDisk::new(2);
    let (mut log, _) = open(&disk, 1024).unwrap();
    log.set_vote(b"vote").unwrap();
    log.set_committed(b"c").unwrap();
    for i in 0..200 {
        log.append(i, &payload(i, 0)).unwrap();
    }
    let n = log.segment_count();
    log.purge(150, b"p150").unwrap();
    sync(&mut log);
    let paths = log.detach_purged(150);
    assert!(!paths.is_empty() && log.segment_count() == n - paths.len());
    let (d, dir_file) = log.disk();
    remove_segments(&*d, &*dir_file, &paths).unwrap();
    let before = state(&log);
    drop(log);
    disk.crash_power();
    let (log, rec) = open(&disk, 1024).unwrap();
    assert_eq!(rec.segments, n - paths.len());
    assert_eq!(state(&log), before);
    assert_eq!(log.vote(), Some(&b"vote"[..]));
    assert_eq!(log.first_index(), Some(151));
}

#[test]
fn a_purge_past_the_end_empties_the_log() {
    let disk = SimDisk::new(3);
    let (mut log, _) = open(&disk, 4096).unwrap();
    for i in 0..10 {
        log.append(i, b"x").unwrap();
    }
    log.purge(20, b"p20").unwrap();
    assert!(log.is_empty());
    assert!(log.append(20, b"y").is_err(), "below the purge point");
    log.append(21, b"y").unwrap();
    sync(&mut log);
    drop(log);
    let (log, _) = open(&disk, 4096).unwrap();
    assert_eq!(log.first_index(), Some(21));
    assert_eq!(log.purged().map(|p| p.0), Some(20));
}

#[test]
fn a_newer_format_is_refused() {
    let disk = SimDisk::new(4);
    let (mut log, _) = open(&disk, 4096).unwrap();
    log.append(1, b"x").unwrap();
    let path = log.segs[0].path.clone();
    // SAFETY: test; the only reference.
    unsafe { *log.segs[0].map.as_ptr().add(8) = 2 };
    drop(log);
    let err = open(&disk, 4096).err().expect("refused");
    assert!(err.to_string().contains("version 2"), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()));
}

/// A sealed segment that lost its last records (a crash can write a
/// new segment's directory entry and records back before the old
/// segment's tail): what follows it is set aside, not read after a hole.
#[test]
fn segments_after_a_lost_tail_are_set_aside() {
    let disk = SimDisk::new(5);
    let (mut log, _) = open(&disk, 512).unwrap();
    for i in 1..=20 {
        log.append(i, &payload(i, 0)).unwrap();
    }
    sync(&mut log);
    assert!(log.segment_count() >= 3);
    // Zero the last record of the first segment.
    let (at, total) = {
        let s = &log.segs[0];
        let data = s.written();
        let mut pos = HEADER_LEN;
        let mut last = (pos, 0);
        while let Some(t) = valid_at(&data[pos..]) {
            last = (pos, t);
            pos += t;
        }
        last
    };
    let first_seg_entries = log.segs[0].max_index.unwrap();
    // SAFETY: test; nothing borrows the mapping.
    unsafe { std::ptr::write_bytes(log.segs[0].map.as_ptr().add(at), 0, total) };
    sync_all(&log);
    let n = log.segment_count();
    drop(log);
    disk.crash_power();
    let (log, rec) = open(&disk, 512).unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.last_index(), Some(first_seg_entries - 1));
    assert_eq!(rec.repairs.len(), n - 1, "{:?}", rec.repairs);
    let set_aside = disk
        .list_dir(&dir())
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".dropped"))
        .count();
    assert_eq!(set_aside, n - 1);
}

fn sync_all(log: &RaftLog) {
    for s in &log.segs {
        s.map.sync().unwrap();
    }
}

/// Power loss at random points of random work, over many seeds: the
/// log reopens as the state after some prefix of the calls, never
/// before the last call a completed sync covered.
#[test]
fn power_loss_leaves_a_prefix_of_the_calls() {
    for seed in 1..=300u64 {
        let disk = SimDisk::new(seed);
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let seg = [256, 600, 4096][(seed % 3) as usize];
        let (mut log, _) = open(&disk, seg).unwrap();
        // The state after each call; the index of the last synced one.
        let mut history = vec![state(&log)];
        let mut synced = 0;
        let mut last = 0u64;
        let mut purged = 0u64;
        let steps = 20 + next(60);
        for _ in 0..steps {
            match next(10) {
                0..=4 => {
                    last += 1;
                    log.append(last, &payload(last, seed)).unwrap();
                }
                5 if last > 2 => {
                    last = (last - next(3)).max(purged);
                    log.truncate(last + 1).unwrap();
                }
                6 => log.set_vote(&next(1000).to_le_bytes()).unwrap(),
                7 => log.set_committed(&last.to_le_bytes()).unwrap(),
                8 if last > 3 => {
                    let upto = (last - next(3)).max(purged);
                    purged = upto;
                    log.purge(upto, &upto.to_le_bytes()).unwrap();
                    history.push(state(&log));
                    sync(&mut log);
                    synced = history.len() - 1;
                    let paths = log.detach_purged(upto);
                    let (d, dir_file) = log.disk();
                    remove_segments(&*d, &*dir_file, &paths).unwrap();
                    continue;
                }
                _ => {
                    sync(&mut log);
                    synced = history.len() - 1;
                    continue;
                }
            }
            history.push(state(&log));
        }
        drop(log);
        disk.crash_power();
        let (log, _rec) = match open(&disk, seg) {
            Ok(x) => x,
            Err(e) => panic!("seed {seed}: reopen failed: {e}"),
        };
        let got = state(&log);
        let at = history[synced..].iter().position(|s| *s == got);
        assert!(
            at.is_some(),
            "seed {seed}: recovered a state that no call after the last sync left:\n{got:?}\nsynced: {:?}",
            history[synced]
        );
        // It takes appends again, and keeps them.
        let mut log = log;
        let next_i = log
            .last_index()
            .or(log.purged().map(|p| p.0))
            .map_or(1, |i| i + 1);
        for i in next_i..next_i + 4 {
            log.append(i, &payload(i, seed + 1)).unwrap();
        }
        sync(&mut log);
        let want = state(&log);
        drop(log);
        disk.crash_power();
        let (log, rec) = open(&disk, seg).unwrap();
        assert_eq!(state(&log), want, "seed {seed}: after a second crash");
        assert!(
            rec.repairs.is_empty(),
            "seed {seed}: nothing to repair after a synced run: {:?}",
            rec.repairs
        );
    }
}
