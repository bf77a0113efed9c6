//! Password hashes in RabbitMQ's format and permission patterns.

use super::super::users::{
    Access, HASHING_ALGORITHM, Permissions, User, check_password, hash_password, refused,
};
use crate::protocol::reply::ACCESS_REFUSED;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

fn b64(s: &str) -> Vec<u8> {
    STANDARD.decode(s).expect("base64")
}

/// Hashes exported by RabbitMQ 3.10.8 (`rabbitmqctl add_user probe secret`,
/// `rabbitmqctl export_definitions`), with their passwords.
const RABBITMQ_HASHES: &[(&str, &str)] = &[
    ("secret", "axJ4rL20dJ7otTOIwGJKihBgfu2HMLG0HWiaqFnTe4lt0uIG"),
    ("guest", "759rIJUWSe3ZpBDo2xA8rA37C/Zhz84Qy2CZTs3ru0UN5+pa"),
    ("pw", "e0F6ODvmU5aBKZLH8PkEoEo3hJ+qI9aC2YKA5DmbRlTzPhP/"),
];

#[test]
fn hashes_made_by_rabbitmq_are_accepted() {
    for (password, hash) in RABBITMQ_HASHES {
        let stored = b64(hash);
        assert_eq!(stored.len(), 36);
        assert!(check_password(&stored, password.as_bytes()), "{password}");
    }
}

#[test]
fn wrong_passwords_are_refused() {
    let stored = b64(RABBITMQ_HASHES[0].1);
    for wrong in ["", "Secret", "secret ", "secre", "guest"] {
        assert!(!check_password(&stored, wrong.as_bytes()), "{wrong:?}");
    }
    // Any flipped bit of the stored hash, salt included, refuses.
    for i in 0..stored.len() {
        let mut bad = stored.clone();
        bad[i] ^= 1;
        assert!(!check_password(&bad, b"secret"), "byte {i}");
    }
}

#[test]
fn warren_reproduces_rabbitmqs_hash_from_its_salt() {
    for (password, hash) in RABBITMQ_HASHES {
        let stored = b64(hash);
        let salt: [u8; 4] = stored[..4].try_into().unwrap();
        assert_eq!(hash_password(password.as_bytes(), salt), stored, "{password}");
    }
}

#[test]
fn hash_layout_is_salt_then_sha256() {
    let h = hash_password(b"secret", [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(h.len(), 36);
    assert_eq!(&h[..4], &[0xde, 0xad, 0xbe, 0xef]);
    // sha256(0xdeadbeef ‖ "secret"), computed independently.
    let mut input = vec![0xde, 0xad, 0xbe, 0xef];
    input.extend_from_slice(b"secret");
    use sha2::Digest;
    assert_eq!(&h[4..], sha2::Sha256::digest(&input).as_slice());
    assert!(check_password(&h, b"secret"));
    // Another salt, another hash.
    assert_ne!(hash_password(b"secret", [0, 0, 0, 0]), h);
}

#[test]
fn malformed_stored_hashes_refuse_everything() {
    assert!(!check_password(&[], b""));
    let h = hash_password(b"", [1, 2, 3, 4]);
    assert!(check_password(&h, b""));
    assert!(!check_password(&h[..35], b""));
    let mut long = h.clone();
    long.push(0);
    assert!(!check_password(&long, b""));
}

#[test]
fn algorithm_name_is_rabbitmqs() {
    assert_eq!(HASHING_ALGORITHM, "rabbit_password_hashing_sha256");
}

#[test]
fn user_tags() {
    let u = User {
        name: "u".into(),
        password_hash: vec![],
        tags: vec!["administrator".into(), "monitoring".into()],
        counters: Default::default(),
    };
    assert!(u.has_tag("administrator") && u.has_tag("monitoring"));
    assert!(!u.has_tag("management") && !u.has_tag("Administrator"));
}

#[test]
fn permission_patterns_are_unanchored_regexes() {
    let p = Permissions::new("^c", "w", "^r.*x$").unwrap();
    let cases: &[(Access, &str, bool)] = &[
        (Access::Configure, "cq", true),
        (Access::Configure, "qc", false),
        (Access::Write, "w", true),
        (Access::Write, "aws", true),
        (Access::Write, "W", false),
        (Access::Read, "rabx", true),
        (Access::Read, "rabxy", false),
    ];
    for (access, name, want) in cases {
        assert_eq!(p.allows(*access, name.as_bytes()), *want, "{access:?} {name}");
    }
    assert_eq!(Access::Configure.as_str(), "configure");
    assert_eq!(Access::Write.as_str(), "write");
    assert_eq!(Access::Read.as_str(), "read");
}

#[test]
fn empty_patterns_grant_nothing_and_dot_star_everything() {
    let none = Permissions::new("", "", "").unwrap();
    let all = Permissions::new(".*", ".*", ".*").unwrap();
    for a in [Access::Configure, Access::Write, Access::Read] {
        assert!(!none.allows(a, b""));
        assert!(!none.allows(a, b"q"));
        assert!(all.allows(a, b""));
        assert!(all.allows(a, b"amq.gen-x"));
    }
}

#[test]
fn invalid_patterns_are_refused_with_the_pattern_in_the_text() {
    let e = Permissions::new(".*", "(", ".*").unwrap_err();
    assert!(e.starts_with("invalid regular expression '(': "), "{e}");
}

#[test]
fn permissions_compare_by_their_patterns() {
    assert_eq!(
        Permissions::new("a", "b", "c").unwrap(),
        Permissions::new("a", "b", "c").unwrap()
    );
    assert_ne!(
        Permissions::new("a", "b", "c").unwrap(),
        Permissions::new("a", "b", "d").unwrap()
    );
}

#[test]
fn refused_text_is_rabbitmqs() {
    let e = refused("queue", b"q", "/", "u");
    assert_eq!(
        (e.code, e.reply_text()),
        (
            ACCESS_REFUSED,
            "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'".to_string()
        )
    );
    let e = refused("exchange", b"amq.default", "v", "guest");
    assert_eq!(
        e.reply_text(),
        "ACCESS_REFUSED - access to exchange 'amq.default' in vhost 'v' refused for user 'guest'"
    );
}
