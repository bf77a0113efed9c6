//! The cluster's shared secret: what a node proves it knows before the
//! cluster port accepts anything from it (see [`super::wire`]'s handshake).
//!
//! Like Erlang's cookie: the file `cluster.cookie` in the data dir, created
//! on first start with 32 random bytes (64 hex characters, mode 0600), copied
//! by the operator to every node of the cluster; or given on the command line
//! (`--cluster-secret`). A cookie file that the group or others may read is
//! refused, as Erlang refuses one ("Cookie file ... must be accessible by
//! owner only").

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// The cookie's file name in the data dir.
pub const COOKIE_FILE: &str = "cluster.cookie";

/// A cookie longer than this is not a cookie (refused, not read whole).
const MAX_COOKIE: u64 = 4096;

/// The shared secret. Never printed: `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl Secret {
    /// The key of the handshake's HMAC.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Reads `data_dir/cluster.cookie`, or creates it (32 random bytes as 64
    /// hex characters, mode 0600). Errors: a cookie readable or writable by
    /// the group or others, an empty or oversized one, or I/O.
    pub fn load_or_create(data_dir: &Path) -> io::Result<Secret> {
        let path = data_dir.join(COOKIE_FILE);
        match std::fs::File::open(&path) {
            Ok(f) => return Self::read_cookie(&path, f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        std::fs::create_dir_all(data_dir)?;
        let mut raw = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let mut f = match created {
            Ok(f) => f,
            // Another process made it first: use theirs.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Self::read_cookie(&path, std::fs::File::open(&path)?);
            }
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        f.write_all(hex.as_bytes())?;
        f.sync_all()?;
        // The new name must survive a crash too.
        if let Ok(dir) = std::fs::File::open(data_dir) {
            let _ = dir.sync_all();
        }
        log::info!("created the cluster cookie {}", path.display());
        Ok(Secret(hex.into_bytes().into()))
    }

    fn read_cookie(path: &Path, f: std::fs::File) -> io::Result<Secret> {
        let meta = f.metadata()?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "Cookie file {} must be accessible by owner only (mode is {:o}; chmod 600 it)",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
        if !meta.is_file() || meta.len() > MAX_COOKIE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "Cookie file {} is not a cookie (at most {MAX_COOKIE} bytes)",
                    path.display()
                ),
            ));
        }
        let mut text = String::new();
        f.take(MAX_COOKIE)
            .read_to_string(&mut text)
            .map_err(|e| io::Error::new(e.kind(), format!("Cookie file {}: {e}", path.display())))?;
        text.parse().map_err(|e: SecretError| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("Cookie file {}: {e}", path.display()),
            )
        })
    }
}

/// Why a text is not a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError(&'static str);

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SecretError {}

/// `--cluster-secret`: the text itself (surrounding whitespace ignored, as
/// in a cookie file), never empty.
impl FromStr for Secret {
    type Err = SecretError;
    fn from_str(s: &str) -> Result<Secret, SecretError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SecretError("the cluster secret is empty"));
        }
        if s.len() as u64 > MAX_COOKIE {
            return Err(SecretError("the cluster secret is too long"));
        }
        Ok(Secret(s.as_bytes().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s: Secret = "hunter2-very-secret".parse().unwrap();
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert_eq!(s.bytes(), b"hunter2-very-secret");
        assert_eq!(" x \n".parse::<Secret>().unwrap().bytes(), b"x");
        assert!("  \n".parse::<Secret>().is_err());
    }
}
