//! Users, password hashes and permissions, as RabbitMQ keeps them.
//!
//! Passwords are stored as RabbitMQ's `rabbit_password_hashing_sha256`:
//! a 4-byte random salt followed by SHA-256(salt ‖ password). Never plain
//! text, on disk or in any answer. Permissions are three regular
//! expressions per user and vhost, matched unanchored against resource
//! names (an empty pattern grants nothing), as `rabbit_access_control`.

use regex::bytes::Regex;
use sha2::{Digest, Sha256};

/// The hashing algorithm name RabbitMQ's definitions use.
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// A user. Replicated on every shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Salt ‖ SHA-256(salt ‖ password); empty: no password login.
    pub password_hash: Vec<u8>,
    pub tags: Vec<String>,
    /// The user's connections and channels over every shard, shared by
    /// every replica (see [`super::limits`]). Runtime state, never
    /// written to the log; a user replaced by another `PutUser` keeps its
    /// counters (the control plane carries them over).
    pub counters: super::limits::UserCounters,
}

impl User {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Hashes a password with the given salt.
pub fn hash_password(password: &[u8], salt: [u8; 4]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    out
}

/// Constant-time comparison of a password against a stored hash.
pub fn check_password(stored: &[u8], password: &[u8]) -> bool {
    if stored.len() != 36 {
        return false;
    }
    let salt: [u8; 4] = stored[..4].try_into().expect("4 bytes");
    let computed = hash_password(password, salt);
    computed.iter().zip(stored).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// What an operation needs on a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

/// A user's permissions in one vhost. Replicated on every shard.
#[derive(Clone, Debug)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
    compiled: [Option<Regex>; 3],
}

impl PartialEq for Permissions {
    fn eq(&self, o: &Self) -> bool {
        (&self.configure, &self.write, &self.read) == (&o.configure, &o.write, &o.read)
    }
}

fn compile(p: &str) -> Result<Option<Regex>, String> {
    if p.is_empty() {
        return Ok(None);
    }
    Regex::new(p)
        .map(Some)
        .map_err(|e| format!("invalid regular expression '{p}': {e}"))
}

impl Permissions {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self, String> {
        Ok(Permissions {
            compiled: [compile(configure)?, compile(write)?, compile(read)?],
            configure: configure.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        })
    }

    /// Does this grant `access` to a resource called `name`?
    pub fn allows(&self, access: Access, name: &[u8]) -> bool {
        let re = match access {
            Access::Configure => &self.compiled[0],
            Access::Write => &self.compiled[1],
            Access::Read => &self.compiled[2],
        };
        re.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// The 403 RabbitMQ sends for a refused resource.
pub fn refused(kind: &str, name: &[u8], vhost: &str, user: &str) -> crate::protocol::AmqpError {
    crate::protocol::AmqpError::access_refused(format!(
        "access to {kind} '{}' in vhost '{vhost}' refused for user '{user}'",
        String::from_utf8_lossy(name)
    ))
}

/// Is this peer address on the local machine?
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_roundtrip() {
        let h = hash_password(b"secret", [1, 2, 3, 4]);
        assert_eq!(h.len(), 36);
        assert!(check_password(&h, b"secret"));
        assert!(!check_password(&h, b"Secret"));
        assert!(!check_password(&[], b""));
        // RabbitMQ's own hash of "guest" with salt 0x908DC60A (from its docs).
        let known = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
        )
        .unwrap();
        assert!(check_password(&known, b"test12"));
    }

    #[test]
    fn permissions_are_unanchored_regexes() {
        let p = Permissions::new(".*", "^amq\\.", "").unwrap();
        assert!(p.allows(Access::Configure, b"anything"));
        assert!(p.allows(Access::Write, b"amq.topic"));
        assert!(!p.allows(Access::Write, b"x.amq.topic"));
        assert!(!p.allows(Access::Read, b"q"), "empty grants nothing");
        let q = Permissions::new("foo", "foo", "foo").unwrap();
        assert!(q.allows(Access::Read, b"xfoox"), "unanchored");
        assert!(Permissions::new("(", "", "").is_err());
    }

    #[test]
    fn loopback() {
        assert!(is_loopback(&"127.0.0.1:1".parse().unwrap()));
        assert!(is_loopback(&"[::1]:1".parse().unwrap()));
        assert!(is_loopback(&"[::ffff:127.0.0.1]:1".parse().unwrap()));
        assert!(!is_loopback(&"10.0.0.1:1".parse().unwrap()));
    }
}
