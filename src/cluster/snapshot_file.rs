//! A Raft group's current snapshot, kept in one file of its directory
//! (warren's format, not openraft's): a version byte, then the postcard of
//! the snapshot's meta and its data. Written to a temporary file, synced,
//! and renamed over the old one (then the directory synced), so a crash
//! leaves the old snapshot or the new one.

use openraft::RaftTypeConfig;
use openraft::alias::SnapshotMetaOf;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

const VERSION: u8 = 1;

#[derive(Deserialize)]
#[serde(bound = "")]
struct Stored<C: RaftTypeConfig> {
    meta: SnapshotMetaOf<C>,
    data: Vec<u8>,
}

#[derive(Serialize)]
#[serde(bound = "")]
struct StoredRef<'a, C: RaftTypeConfig> {
    meta: &'a SnapshotMetaOf<C>,
    data: &'a [u8],
}

/// The snapshot in `path`, if there is one.
pub fn load<C: RaftTypeConfig>(path: &Path) -> io::Result<Option<(SnapshotMetaOf<C>, Vec<u8>)>> {
    let bad =
        |what: String| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    match std::fs::read(path) {
        Ok(b) if b.first() == Some(&VERSION) => {
            let s: Stored<C> = postcard::from_bytes(&b[1..]).map_err(|e| bad(e.to_string()))?;
            Ok(Some((s.meta, s.data)))
        }
        Ok(_) => Err(bad("unknown snapshot format".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the snapshot in `path`.
pub fn save<C: RaftTypeConfig>(path: &Path, meta: &SnapshotMetaOf<C>, data: &[u8]) -> io::Result<()> {
    let mut b = vec![VERSION];
    b = postcard::to_extend(&StoredRef::<C> { meta, data }, b).map_err(io::Error::other)?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::quorum::Quorum;

    #[test]
    fn a_snapshot_round_trips_and_a_foreign_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("snapshot");
        assert!(load::<Quorum>(&path).unwrap().is_none());
        let meta = SnapshotMetaOf::<Quorum>::default();
        save::<Quorum>(&path, &meta, b"state").unwrap();
        let (m, data) = load::<Quorum>(&path).unwrap().unwrap();
        assert_eq!(data, b"state");
        assert_eq!(m, meta);
        std::fs::write(&path, b"\x09junk").unwrap();
        assert!(load::<Quorum>(&path).is_err());
    }
}
