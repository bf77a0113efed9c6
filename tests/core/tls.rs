//! AMQPS and HTTPS management with real clients (lapin, pika, Python's
//! own HTTPS client) and certificates the test makes: a CA, a server
//! certificate, client certificates from that CA and from a stranger's.
//! Client certificates, `fail_if_no_peer_cert` and the EXTERNAL mechanism.

use crate::common;
use futures_lite::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use warren::admin::AdminOp;
use warren::config::{CertLogin, TlsListener, TlsOptions};

/// Certificates in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

struct Identity {
    cert: String,
    key: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>, sans: &[&str], cn: &str) -> Identity {
    let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    // Most general first, as a CA would write it (RabbitMQ shows it reversed).
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "warren tests");
    p.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, issuer).unwrap();
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("warren test CA");
        let server = leaf(&ca, &["localhost", "127.0.0.1"], "localhost");
        let alice = leaf(&ca, &[], "alice");
        let mallory = leaf(&ca, &[], "mallory");
        let stranger = leaf(&self::ca("someone else's CA"), &[], "alice");
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w("ca.pem", &ca.pem());
        w("server.pem", &server.cert);
        w("server.key", &server.key);
        for (name, id) in [("alice", &alice), ("mallory", &mallory), ("stranger", &stranger)] {
            w(&format!("{name}.pem"), &id.cert);
            w(&format!("{name}.key"), &id.key);
        }
        Pki {
            ca_pem: ca.pem(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn options(&self, verify_peer: bool, fail_if_no_peer_cert: bool) -> TlsOptions {
        TlsOptions {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            ca: verify_peer.then(|| self.path("ca.pem")),
            verify_peer,
            fail_if_no_peer_cert,
            cert_login_from: CertLogin::CommonName,
        }
    }

    fn identity(&self, name: &str) -> lapin::tcp::OwnedIdentity {
        lapin::tcp::OwnedIdentity::PKCS8 {
            pem: std::fs::read(self.path(&format!("{name}.pem"))).unwrap(),
            key: std::fs::read(self.path(&format!("{name}.key"))).unwrap(),
        }
    }
}

struct TlsBroker {
    handle: warren::ServerHandle,
    tls: SocketAddr,
    _dir: tempfile::TempDir,
}

fn start(shards: usize, options: TlsOptions) -> TlsBroker {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = warren::Config {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        shards,
        data_dir: dir.path().to_path_buf(),
        tls: Some(TlsListener { port: 0, options }),
        ..Default::default()
    };
    cfg.limits.handshake_timeout = Duration::from_secs(2);
    let handle = warren::start(cfg).expect("broker starts");
    let tls = handle.amqps_addr().expect("AMQPS listens");
    TlsBroker {
        handle,
        tls,
        _dir: dir,
    }
}

async fn connect_tls(
    pki: &Pki,
    addr: SocketAddr,
    creds: &str,
    identity: Option<lapin::tcp::OwnedIdentity>,
) -> lapin::Result<Connection> {
    let uri = format!("amqps://{creds}127.0.0.1:{}/%2f", addr.port());
    let cfg = lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain: Some(pki.ca_pem.clone()),
    };
    Connection::connect_with_config(
        &uri,
        ConnectionProperties::default(),
        cfg,
        lapin::runtime::default_runtime().unwrap(),
    )
    .await
}

fn add_user(admin: &warren::admin::Admin, name: &str) {
    admin
        .control(
            "guest",
            AdminOp::PutUser {
                name: name.into(),
                password_hash: Vec::new(),
                tags: vec![],
            },
        )
        .unwrap();
    admin
        .control(
            "guest",
            AdminOp::SetPermissions {
                user: name.into(),
                vhost: "/".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            },
        )
        .unwrap();
}

/// Publishes `n` messages (one of 1 MiB, split over many frames and TLS
/// records) and consumes them back in order.
async fn round_trip(conn: &Connection, queue: &str, n: usize) {
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let body = |i: usize| -> Vec<u8> {
        if i == n / 2 {
            (0..1 << 20).map(|j| (j % 251) as u8).collect()
        } else {
            format!("message {i}").into_bytes()
        }
    };
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body(i),
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.wait_for_confirms().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("delivery in time")
            .unwrap()
            .unwrap();
        assert_eq!(d.data, body(i), "message {i}");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_over_tls_beside_plain_amqp() {
    let pki = Pki::new();
    let b = start(2, pki.options(false, false));
    let tls = connect_tls(&pki, b.tls, "guest:guest@", None).await.unwrap();
    let plain = common::connect(&common::uri_of(&b.handle)).await;
    // A TLS publisher and a plain consumer of the same queue, and the
    // other way round.
    round_trip(&tls, "over-tls", 300).await;
    round_trip(&plain, "over-tcp", 50).await;
    let ch = plain.create_channel().await.unwrap();
    ch.queue_declare(
        "mixed".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let tch = tls.create_channel().await.unwrap();
    tch.basic_publish(
        "".into(),
        "mixed".into(),
        BasicPublishOptions::default(),
        b"from tls",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let got = loop {
        if let Some(m) = ch
            .basic_get("mixed".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got.delivery.data, b"from tls");
    // The management view marks the connection as TLS.
    let snap = b.handle.admin().snapshot().unwrap();
    let tls_conns: Vec<_> = snap.connections.iter().filter(|c| c.tls.is_some()).collect();
    assert_eq!(tls_conns.len(), 1, "{:?}", snap.connections);
    assert_eq!(tls_conns[0].tls.as_ref().unwrap().protocol, "tlsv1.3");
    assert_eq!(tls_conns[0].port, b.tls.port());
    assert_eq!(snap.connections.iter().filter(|c| c.tls.is_none()).count(), 1);
    tls.close(200, "bye".into()).await.unwrap();
    plain.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_logs_in_as_the_certificate_names() {
    let pki = Pki::new();
    let b = start(1, pki.options(true, false));
    add_user(&b.handle.admin(), "alice");
    // EXTERNAL with alice's certificate: logged in as alice (no password);
    // lapin picks the mechanism from the URI.
    let uri = format!("amqps://127.0.0.1:{}/%2f?auth_mechanism=external", b.tls.port());
    let connect = |id: Option<lapin::tcp::OwnedIdentity>| {
        let uri = uri.clone();
        let ca = pki.ca_pem.clone();
        async move {
            Connection::connect_with_config(
                &uri,
                ConnectionProperties::default(),
                lapin::tcp::OwnedTLSConfig {
                    identity: id,
                    cert_chain: Some(ca),
                },
                lapin::runtime::default_runtime().unwrap(),
            )
            .await
        }
    };
    let alice = connect(Some(pki.identity("alice"))).await.expect("alice logs in");
    round_trip(&alice, "alices", 20).await;
    let snap = b.handle.admin().snapshot().unwrap();
    let c = &snap.connections[0];
    assert_eq!(c.user, "alice");
    assert_eq!(c.auth_mechanism, "EXTERNAL");
    let cert = c.tls.as_ref().unwrap().cert.as_ref().unwrap();
    assert_eq!(cert.subject, "CN=alice,O=warren tests");
    assert_eq!(cert.issuer, "CN=warren test CA");
    // mallory's certificate is good but names no user.
    let e = connect(Some(pki.identity("mallory")))
        .await
        .expect_err("mallory is refused");
    assert!(format!("{e:?}").contains("ACCESS_REFUSED"), "{e:?}");
    // No certificate: EXTERNAL is refused (the handshake itself is fine).
    let e = connect(None).await.expect_err("no certificate, no EXTERNAL");
    assert!(format!("{e:?}").contains("ACCESS_REFUSED"), "{e:?}");
    // Without a certificate a password still works.
    let guest = connect_tls(&pki, b.tls, "guest:guest@", None).await.unwrap();
    guest.close(200, "bye".into()).await.unwrap();
    // A certificate from a CA the broker does not trust fails the handshake.
    assert!(connect(Some(pki.identity("stranger"))).await.is_err());
    // Whatever failed, alice's connection is unharmed.
    round_trip(&alice, "alices-2", 5).await;
    assert_eq!(b.handle.admin().snapshot().unwrap().connections.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_if_no_peer_cert_refuses_the_handshake() {
    let pki = Pki::new();
    let b = start(1, pki.options(true, true));
    assert!(connect_tls(&pki, b.tls, "guest:guest@", None).await.is_err());
    let c = connect_tls(&pki, b.tls, "guest:guest@", Some(pki.identity("mallory")))
        .await
        .expect("with a certificate, a password login works");
    round_trip(&c, "q", 3).await;
}

/// Plain AMQP, garbage and silence on the TLS port: each is closed, none
/// costs the broker its other clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_port_sheds_what_is_not_tls() {
    let pki = Pki::new();
    let b = start(1, pki.options(false, false));
    let plain_header = {
        let mut s = std::net::TcpStream::connect(b.tls).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    };
    // A TLS alert at most, never an AMQP frame.
    assert!(!plain_header.starts_with(b"\x01\x00\x00"), "{plain_header:?}");
    // A client that never starts the handshake is closed after the
    // handshake timeout (2 s here).
    let mut silent = std::net::TcpStream::connect(b.tls).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0, "closed without a word");
    let c = connect_tls(&pki, b.tls, "guest:guest@", None).await.unwrap();
    round_trip(&c, "q", 3).await;
}

#[test]
fn broker_without_its_certificate_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = warren::Config {
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        data_dir: dir.path().to_path_buf(),
        tls: Some(TlsListener {
            port: 0,
            options: TlsOptions {
                cert: dir.path().join("nope.pem"),
                key: dir.path().join("nope.key"),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let e = warren::start(cfg).err().expect("refuses to start");
    assert!(e.to_string().contains("nope.pem"), "{e}");
}

/// pika over TLS, with a password and with EXTERNAL; the management API
/// over HTTPS (Python's own client) shows the TLS listeners and
/// connections as RabbitMQ does.
#[test]
fn pika_and_https_management() {
    let Some(pp) = crate::prereq::python_path("pika_and_https_management") else {
        return;
    };
    let pki = Pki::new();
    let b = start(2, pki.options(true, false));
    add_user(&b.handle.admin(), "alice");
    let mut mcfg = warren::mgmt::MgmtConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let mut https = pki.options(false, false);
    https.ca = None;
    mcfg.tls = Some((0, warren::tls::server_config(&https, &[b"http/1.1"]).unwrap()));
    let m = warren::mgmt::start(b.handle.admin(), mcfg).unwrap();
    let out = Command::new("python3")
        .arg(crate::prereq::root().join("tests/pika/tls.py"))
        .arg(b.tls.port().to_string())
        .arg(m.tls_addr().unwrap().port().to_string())
        .arg(pki.dir.path())
        .env("PYTHONPATH", &pp)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tls.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = [
        "ok plain-login over tls",
        "ok external as alice",
        "ok external refused without a certificate",
        "ok https overview listeners amqp amqp/ssl http https",
        "ok https connections ssl=True auth=EXTERNAL subject=CN=alice,O=warren tests",
        "ok http still served",
    ];
    for e in expected {
        assert!(stdout.lines().any(|l| l == e), "missing {e:?} in:\n{stdout}");
    }
}

/// A TLS consumer accepted on another shard than its queue's moves there
/// with its session (keys, sequence numbers, buffered records) and goes on
/// as before: no re-handshake, nothing lost or out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connection_moves_to_its_queue() {
    let pki = Pki::new();
    let b = start(2, pki.options(false, false));
    let setup = connect_tls(&pki, b.tls, "guest:guest@", None).await.unwrap();
    let sch = setup.create_channel().await.unwrap();
    sch.queue_declare(
        "moving".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let admin = b.handle.admin();
    let snap = admin.snapshot().unwrap();
    let home = snap.queues.iter().find(|q| q.name == "moving").unwrap().shard;
    // TLS connections until one lands on the other shard (the kernel
    // spreads them).
    let mut extra = Vec::new();
    let conn = loop {
        let before: Vec<String> = admin
            .snapshot()
            .unwrap()
            .connections
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let c = connect_tls(&pki, b.tls, "guest:guest@", None).await.unwrap();
        let snap = admin.snapshot().unwrap();
        let new = snap
            .connections
            .iter()
            .find(|c| !before.contains(&c.name))
            .unwrap();
        if new.shard != home {
            break c;
        }
        extra.push(c);
        assert!(extra.len() < 100, "every connection landed on shard {home}");
    };
    let moves = |a: &warren::admin::Admin| {
        a.snapshot()
            .unwrap()
            .shards
            .iter()
            .map(|s| s.handoffs)
            .sum::<u64>()
    };
    let before = moves(&admin);
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            "moving".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..50u32 {
        let body = if i == 25 {
            vec![7u8; 1 << 20]
        } else {
            i.to_be_bytes().to_vec()
        };
        sch.basic_publish(
            "".into(),
            "moving".into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("delivery in time")
            .unwrap()
            .unwrap();
        assert_eq!(d.data, body, "message {i}");
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    assert_eq!(moves(&admin), before + 1, "the consumer moved once");
    let snap = admin.snapshot().unwrap();
    let moved: Vec<_> = snap
        .connections
        .iter()
        .filter(|c| c.shard == home && c.tls.is_some())
        .collect();
    assert!(!moved.is_empty());
    // Its channel still works both ways after the move.
    round_trip(&conn, "after-move", 5).await;
}
