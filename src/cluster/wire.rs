//! The cluster port's wire format, sans I/O: the handshake that proves both
//! ends know the shared secret, and the frames that follow it.
//!
//! **Handshake** (mutual challenge–response, HMAC-SHA256 keyed by the
//! secret). Both ends send a hello at once:
//!
//! ```text
//! hello = "WRNC" | version u16le | role u8 (0 client, 1 server) | nonce [32] | name_len u8 | name
//! proof = status u8 (0 accept, 1 refuse) | mac [32]
//! mac   = HMAC(secret, "warren-cluster" | version | own role | peer nonce | own nonce
//!                      | own name (u8 len + bytes) | peer name (u8 len + bytes))
//! ```
//!
//! The client answers the server's hello with its proof; the server checks
//! it and only then answers with its own proof (or a refusal, and closes).
//! The client checks the server's proof before it sends a request. A wrong
//! magic, version, role or proof fails the handshake; nothing else is
//! accepted before it succeeded. The role in the MAC stops a reflected
//! proof; the nonces, a replayed one. There is no confidentiality.
//!
//! **Frames** after the handshake: `[len u32le][kind u8][id u64le][body]`,
//! `len` counting what follows it. A request's kind is its service's
//! (`0..=0x7f`); its response carries the same id and the kind
//! [`RESP_OK`] (body: the reply) or [`RESP_ERR`] (body: a UTF-8 error
//! text). Requests and responses of one connection are multiplexed by id.

use hmac::{Hmac, KeyInit, Mac};
use std::fmt;

/// What a hello starts with.
pub const MAGIC: [u8; 4] = *b"WRNC";
/// The protocol version; a peer with another one is refused. Bump it when
/// any message's encoding changes, openraft's included (its serde encodings
/// are not stable across its versions: an openraft bump is a bump here).
pub const VERSION: u16 = 2;
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
/// A node name's longest encoding in a hello.
pub const MAX_NAME: usize = 255;
const HELLO_FIXED: usize = 4 + 2 + 1 + NONCE_LEN + 1;
/// The longest hello.
pub const HELLO_MAX: usize = HELLO_FIXED + MAX_NAME;
pub const PROOF_LEN: usize = 1 + MAC_LEN;

/// Which end of the connection: the one that connected, or the one that accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client = 0,
    Server = 1,
}

impl Role {
    fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

/// Why a handshake failed. None of them says anything of the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The peer does not speak this protocol (garbage, or another service).
    BadMagic,
    /// The peer speaks another version of it.
    Version(u16),
    /// The peer claims the same role as ours.
    Role,
    /// An empty or non-UTF-8 node name.
    BadName,
    /// A proof with an unknown status byte.
    Garbage,
    /// The peer's proof is wrong: it does not know our secret.
    BadProof,
    /// The peer refused our proof: we do not know its secret.
    RefusedByPeer,
    /// Bytes the peer had no business sending before the handshake ended.
    TooLong,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadMagic => f.write_str("not a warren cluster peer (bad magic)"),
            HandshakeError::Version(v) => write!(f, "protocol version {v}, expected {VERSION}"),
            HandshakeError::Role => f.write_str("both ends claim the same role"),
            HandshakeError::BadName => f.write_str("bad node name in hello"),
            HandshakeError::Garbage => f.write_str("malformed proof"),
            HandshakeError::BadProof => {
                f.write_str("wrong cluster secret (the peer's proof does not verify)")
            }
            HandshakeError::RefusedByPeer => f.write_str("the peer refused our proof (wrong cluster secret)"),
            HandshakeError::TooLong => f.write_str("unexpected bytes during the handshake"),
        }
    }
}

impl std::error::Error for HandshakeError {}

type HmacSha256 = Hmac<sha2::Sha256>;

fn mac_of(
    key: &[u8],
    role: Role,
    peer_nonce: &[u8; NONCE_LEN],
    own_nonce: &[u8; NONCE_LEN],
    own_name: &str,
    peer_name: &str,
) -> HmacSha256 {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(b"warren-cluster");
    m.update(&VERSION.to_le_bytes());
    m.update(&[role as u8]);
    m.update(peer_nonce);
    m.update(own_nonce);
    for name in [own_name, peer_name] {
        m.update(&[name.len() as u8]);
        m.update(name.as_bytes());
    }
    m
}

/// The proof a node of `role` gives: see the module's doc.
pub fn proof(
    key: &[u8],
    role: Role,
    peer_nonce: &[u8; NONCE_LEN],
    own_nonce: &[u8; NONCE_LEN],
    own_name: &str,
    peer_name: &str,
) -> [u8; MAC_LEN] {
    mac_of(key, role, peer_nonce, own_nonce, own_name, peer_name)
        .finalize()
        .into_bytes()
        .into()
}

/// A hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub role: Role,
    pub nonce: [u8; NONCE_LEN],
    pub name: String,
}

impl Hello {
    /// Its bytes; a name longer than [`MAX_NAME`] bytes is cut (at a char boundary).
    pub fn encode(&self) -> Vec<u8> {
        let name = clip(&self.name);
        let mut out = Vec::with_capacity(HELLO_FIXED + name.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(self.role as u8);
        out.extend_from_slice(&self.nonce);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out
    }

    /// A hello from the start of `buf` and its length; `Ok(None)` until
    /// complete. Fails as soon as the bytes seen cannot start a hello.
    /// (The version is left to the caller.)
    pub fn decode(buf: &[u8]) -> Result<Option<(Hello, usize)>, HandshakeError> {
        let n = buf.len().min(MAGIC.len());
        if buf[..n] != MAGIC[..n] {
            return Err(HandshakeError::BadMagic);
        }
        if buf.len() < HELLO_FIXED {
            return Ok(None);
        }
        let version = u16::from_le_bytes([buf[4], buf[5]]);
        let role = match buf[6] {
            0 => Role::Client,
            1 => Role::Server,
            _ => return Err(HandshakeError::Role),
        };
        let nonce: [u8; NONCE_LEN] = buf[7..7 + NONCE_LEN].try_into().expect("32 bytes");
        let name_len = buf[HELLO_FIXED - 1] as usize;
        if name_len == 0 {
            return Err(HandshakeError::BadName);
        }
        let end = HELLO_FIXED + name_len;
        if buf.len() < end {
            return Ok(None);
        }
        let name = std::str::from_utf8(&buf[HELLO_FIXED..end]).map_err(|_| HandshakeError::BadName)?;
        let hello = Hello {
            version,
            role,
            nonce,
            name: name.to_string(),
        };
        Ok(Some((hello, end)))
    }
}

/// `name`, cut to at most [`MAX_NAME`] bytes at a char boundary.
fn clip(name: &str) -> &str {
    if name.len() <= MAX_NAME {
        return name;
    }
    let mut end = MAX_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// What one [`Handshake::push`] produced: bytes to send (possibly none),
/// then how the handshake stands.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub send: Vec<u8>,
    pub outcome: Outcome,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Needs more input.
    More,
    /// Both ends proved the secret. `rest`: input after the handshake
    /// (frames), to hand to the frame decoder.
    Authenticated { peer: String, rest: Vec<u8> },
    /// Close the connection (after sending `send`).
    Failed(HandshakeError),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    AwaitHello,
    AwaitProof,
    Finished,
}

/// One end's handshake, sans I/O: [`Handshake::new`] gives the hello to
/// send; feed what the peer sends to [`Handshake::push`] until it says
/// `Authenticated` or `Failed`. Its input buffer is bounded ([`HELLO_MAX`]
/// + [`PROOF_LEN`]): a peer costs nothing more before it has authenticated.
pub struct Handshake {
    role: Role,
    key: Vec<u8>,
    name: String,
    nonce: [u8; NONCE_LEN],
    peer: Option<Hello>,
    buf: Vec<u8>,
    state: State,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("role", &self.role)
            .field("name", &self.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// `nonce` must be fresh random bytes (a CSPRNG's).
    pub fn new(role: Role, key: &[u8], name: &str, nonce: [u8; NONCE_LEN]) -> (Handshake, Vec<u8>) {
        let name = clip(name).to_string();
        let hello = Hello {
            version: VERSION,
            role,
            nonce,
            name: name.clone(),
        }
        .encode();
        let hs = Handshake {
            role,
            key: key.to_vec(),
            name,
            nonce,
            peer: None,
            buf: Vec::new(),
            state: State::AwaitHello,
        };
        (hs, hello)
    }

    /// The peer's hello, once received (its name before it is authenticated).
    pub fn peer_name(&self) -> Option<&str> {
        self.peer.as_ref().map(|h| h.name.as_str())
    }

    fn fail(&mut self, send: Vec<u8>, e: HandshakeError) -> Step {
        self.state = State::Finished;
        self.buf = Vec::new();
        Step {
            send,
            outcome: Outcome::Failed(e),
        }
    }

    fn own_proof(&self, peer: &Hello) -> [u8; MAC_LEN] {
        proof(
            &self.key,
            self.role,
            &peer.nonce,
            &self.nonce,
            &self.name,
            &peer.name,
        )
    }

    /// Takes the peer's next bytes.
    pub fn push(&mut self, input: &[u8]) -> Step {
        if self.state == State::Finished {
            return self.fail(Vec::new(), HandshakeError::TooLong);
        }
        self.buf.extend_from_slice(input);
        let mut send = Vec::new();
        loop {
            match self.state {
                State::AwaitHello => {
                    let (hello, used) = match Hello::decode(&self.buf) {
                        Ok(Some(h)) => h,
                        Ok(None) => break,
                        Err(e) => return self.fail(send, e),
                    };
                    if hello.version != VERSION {
                        return self.fail(send, HandshakeError::Version(hello.version));
                    }
                    if hello.role != self.role.peer() {
                        return self.fail(send, HandshakeError::Role);
                    }
                    self.buf.drain(..used);
                    if self.role == Role::Client {
                        send.push(0);
                        send.extend_from_slice(&self.own_proof(&hello));
                    }
                    self.peer = Some(hello);
                    self.state = State::AwaitProof;
                }
                State::AwaitProof => {
                    if self.buf.len() < PROOF_LEN {
                        break;
                    }
                    let peer = self.peer.take().expect("hello before proof");
                    match self.buf[0] {
                        0 => {}
                        1 => return self.fail(send, HandshakeError::RefusedByPeer),
                        _ => return self.fail(send, HandshakeError::Garbage),
                    }
                    let ok = mac_of(
                        &self.key,
                        self.role.peer(),
                        &self.nonce,
                        &peer.nonce,
                        &peer.name,
                        &self.name,
                    )
                    .verify_slice(&self.buf[1..PROOF_LEN])
                    .is_ok();
                    if !ok {
                        if self.role == Role::Server {
                            // Tell the client why, then close: a refusal says
                            // nothing of our secret.
                            send.push(1);
                            send.extend_from_slice(&[0; MAC_LEN]);
                        }
                        return self.fail(send, HandshakeError::BadProof);
                    }
                    if self.role == Role::Server {
                        send.push(0);
                        send.extend_from_slice(&self.own_proof(&peer));
                    }
                    let rest = self.buf.split_off(PROOF_LEN);
                    self.state = State::Finished;
                    self.buf = Vec::new();
                    return Step {
                        send,
                        outcome: Outcome::Authenticated {
                            peer: peer.name,
                            rest,
                        },
                    };
                }
                State::Finished => unreachable!("returned above"),
            }
        }
        // A server's client has nothing to send after its proof until it
        // has ours; a client's server nothing after its hello and proof.
        if self.buf.len() > HELLO_MAX + PROOF_LEN {
            return self.fail(send, HandshakeError::TooLong);
        }
        Step {
            send,
            outcome: Outcome::More,
        }
    }
}

// ---------------------------------------------------------------- frames

/// `len` + `kind` + `id`.
pub const FRAME_HEADER: usize = 4 + 1 + 8;
/// The highest service kind; kinds above are the transport's own.
pub const MAX_SERVICE_KIND: u8 = 0x7f;
/// A response: the body is the reply.
pub const RESP_OK: u8 = 0x80;
/// A response: the body is an error text (UTF-8).
pub const RESP_ERR: u8 = 0x81;

/// One frame after the handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub id: u64,
    pub body: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// `len` smaller than a frame's kind and id.
    Short(u32),
    /// A body longer than the limit.
    TooLarge(u64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Short(n) => write!(f, "frame length {n} is shorter than its header"),
            FrameError::TooLarge(n) => write!(f, "frame body of {n} bytes is over the limit"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends a frame to `out`. The caller keeps `body` within the peer's limit.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, id: u64, body: &[u8]) {
    let len = u32::try_from(1 + 8 + body.len()).expect("frame body under 4 GiB");
    out.reserve(FRAME_HEADER + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(body);
}

/// A frame's bytes.
pub fn frame(kind: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, kind, id, body);
    out
}

/// How many bytes the frame at the start of `buf` takes in all, once its
/// length is known; fails on a length over `max_body` (checked before
/// anything is allocated for it).
pub fn frame_size(buf: &[u8], max_body: usize) -> Result<Option<usize>, FrameError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
    if len < 9 {
        return Err(FrameError::Short(len));
    }
    let body = u64::from(len) - 9;
    if body > max_body as u64 {
        return Err(FrameError::TooLarge(body));
    }
    Ok(Some(4 + len as usize))
}

/// The frame at the start of `buf` and its size; `Ok(None)` until complete.
pub fn decode_frame(buf: &[u8], max_body: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(size) = frame_size(buf, max_body)? else {
        return Ok(None);
    };
    if buf.len() < size {
        return Ok(None);
    }
    let frame = Frame {
        kind: buf[4],
        id: u64::from_le_bytes(buf[5..FRAME_HEADER].try_into().expect("8 bytes")),
        body: buf[FRAME_HEADER..size].to_vec(),
    };
    Ok(Some((frame, size)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"cookie";

    /// Runs a client and a server handshake against each other, delivering
    /// bytes in chunks of `chunk`; returns both outcomes.
    fn run(ckey: &[u8], skey: &[u8], chunk: usize) -> (Outcome, Outcome) {
        let (mut c, mut to_s) = Handshake::new(Role::Client, ckey, "warren@a", [1; 32]);
        let (mut s, mut to_c) = Handshake::new(Role::Server, skey, "warren@b", [2; 32]);
        let (mut co, mut so) = (Outcome::More, Outcome::More);
        for _ in 0..10_000 {
            if co == Outcome::More && !to_c.is_empty() {
                let take = to_c.len().min(chunk);
                let step = c.push(&to_c[..take]);
                to_c.drain(..take);
                to_s.extend(step.send);
                co = step.outcome;
            }
            if so == Outcome::More && !to_s.is_empty() {
                let take = to_s.len().min(chunk);
                let step = s.push(&to_s[..take]);
                to_s.drain(..take);
                to_c.extend(step.send);
                so = step.outcome;
            }
            if (co != Outcome::More || to_c.is_empty()) && (so != Outcome::More || to_s.is_empty()) {
                break;
            }
        }
        (co, so)
    }

    #[test]
    fn same_secret_authenticates_both_ends_at_any_split() {
        for chunk in [1, 2, 7, 33, 1000] {
            let (c, s) = run(KEY, KEY, chunk);
            assert_eq!(
                c,
                Outcome::Authenticated {
                    peer: "warren@b".into(),
                    rest: vec![]
                },
                "chunk {chunk}"
            );
            assert_eq!(
                s,
                Outcome::Authenticated {
                    peer: "warren@a".into(),
                    rest: vec![]
                },
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn wrong_secret_is_refused_on_both_sides() {
        let (c, s) = run(b"one", b"two", 1000);
        assert_eq!(s, Outcome::Failed(HandshakeError::BadProof));
        assert_eq!(c, Outcome::Failed(HandshakeError::RefusedByPeer));
    }

    #[test]
    fn a_server_that_does_not_know_the_secret_is_caught_by_the_client() {
        // A fake server that accepts anything and answers with a made-up proof.
        let (mut c, _hello) = Handshake::new(Role::Client, KEY, "warren@a", [1; 32]);
        let fake = Hello {
            version: VERSION,
            role: Role::Server,
            nonce: [9; 32],
            name: "evil".into(),
        };
        let step = c.push(&fake.encode());
        assert_eq!(step.outcome, Outcome::More);
        assert_eq!(step.send.len(), PROOF_LEN);
        let mut bogus = vec![0];
        bogus.extend_from_slice(&[7; 32]);
        assert_eq!(c.push(&bogus).outcome, Outcome::Failed(HandshakeError::BadProof));
    }

    #[test]
    fn a_reflected_proof_does_not_verify() {
        // The server's own proof sent back as the client's: the role differs.
        let (mut s, _) = Handshake::new(Role::Server, KEY, "warren@b", [2; 32]);
        let hello = Hello {
            version: VERSION,
            role: Role::Client,
            nonce: [2; 32],
            name: "warren@b".into(),
        };
        assert_eq!(s.push(&hello.encode()).outcome, Outcome::More);
        let mut p = vec![0];
        p.extend_from_slice(&proof(
            KEY,
            Role::Server,
            &[2; 32],
            &[2; 32],
            "warren@b",
            "warren@b",
        ));
        let step = s.push(&p);
        assert_eq!(step.outcome, Outcome::Failed(HandshakeError::BadProof));
        assert_eq!(step.send[0], 1, "a refusal");
    }

    #[test]
    fn wrong_magic_version_or_role_fail_early() {
        let (mut s, _) = Handshake::new(Role::Server, KEY, "b", [0; 32]);
        assert_eq!(s.push(b"AMQP").outcome, Outcome::Failed(HandshakeError::BadMagic));
        let (mut s, _) = Handshake::new(Role::Server, KEY, "b", [0; 32]);
        assert_eq!(s.push(b"W").outcome, Outcome::More);
        assert_eq!(s.push(b"X").outcome, Outcome::Failed(HandshakeError::BadMagic));
        let mut h = Hello {
            version: VERSION + 1,
            role: Role::Client,
            nonce: [0; 32],
            name: "a".into(),
        };
        let (mut s, _) = Handshake::new(Role::Server, KEY, "b", [0; 32]);
        assert_eq!(
            s.push(&h.encode()).outcome,
            Outcome::Failed(HandshakeError::Version(VERSION + 1))
        );
        h.version = VERSION;
        h.role = Role::Server;
        let (mut s, _) = Handshake::new(Role::Server, KEY, "b", [0; 32]);
        assert_eq!(s.push(&h.encode()).outcome, Outcome::Failed(HandshakeError::Role));
    }

    #[test]
    fn long_names_are_clipped_at_a_char_boundary() {
        let name = "é".repeat(200);
        let h = Hello {
            version: VERSION,
            role: Role::Client,
            nonce: [0; 32],
            name,
        };
        let (back, n) = Hello::decode(&h.encode()).unwrap().unwrap();
        assert_eq!(n, h.encode().len());
        assert!(back.name.len() <= MAX_NAME && h.name.starts_with(&back.name));
    }

    #[test]
    fn frame_limits() {
        assert_eq!(decode_frame(&[0, 0, 0], 10), Ok(None));
        assert_eq!(decode_frame(&8u32.to_le_bytes(), 10), Err(FrameError::Short(8)));
        assert_eq!(
            decode_frame(&(9 + 11u32).to_le_bytes(), 10),
            Err(FrameError::TooLarge(11))
        );
        let f = frame(3, 7, &[1; 10]);
        assert_eq!(
            decode_frame(&f, 10).unwrap().unwrap().0,
            Frame {
                kind: 3,
                id: 7,
                body: vec![1; 10]
            }
        );
    }

    fn frames() -> impl Strategy<Value = Vec<(u8, u64, Vec<u8>)>> {
        proptest::collection::vec(
            (
                any::<u8>(),
                any::<u64>(),
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..8,
        )
    }

    /// Decodes every frame of `bytes` fed in pieces cut at `cuts`.
    fn decode_split(bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let mut last = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.push(bytes.len());
        points.sort();
        for p in points {
            buf.extend_from_slice(&bytes[last..p]);
            last = p;
            while let Some((f, n)) = decode_frame(&buf, 1 << 20).unwrap() {
                out.push(f);
                buf.drain(..n);
            }
        }
        assert!(buf.is_empty());
        out
    }

    proptest! {
        #[test]
        fn frames_round_trip_at_every_split(fs in frames(), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
            let mut bytes = Vec::new();
            for (k, id, body) in &fs {
                encode_frame(&mut bytes, *k, *id, body);
            }
            let want: Vec<Frame> = fs.iter().map(|(k, id, b)| Frame { kind: *k, id: *id, body: b.clone() }).collect();
            prop_assert_eq!(decode_split(&bytes, &cuts), want.clone());
            // Every single split point, too.
            for cut in 0..=bytes.len() {
                prop_assert_eq!(decode_split(&bytes, &[cut]), want.clone());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut off = 0;
            while let Ok(Some((_, n))) = decode_frame(&bytes[off..], 64) {
                off += n;
            }
            let _ = Hello::decode(&bytes);
            for role in [Role::Client, Role::Server] {
                let (mut h, _) = Handshake::new(role, KEY, "n", [3; 32]);
                for piece in bytes.chunks(17) {
                    let step = h.push(piece);
                    prop_assert!(step.send.len() <= PROOF_LEN);
                    if let Outcome::Authenticated { .. } = step.outcome {
                        prop_assert!(false, "garbage authenticated");
                    }
                    if step.outcome != Outcome::More {
                        break;
                    }
                }
            }
        }

        #[test]
        fn handshakes_survive_any_chunking(chunk in 1usize..80) {
            let (c, s) = run(KEY, KEY, chunk);
            let authenticated = matches!(c, Outcome::Authenticated { .. });
            prop_assert!(authenticated);
            let authenticated = matches!(s, Outcome::Authenticated { .. });
            prop_assert!(authenticated);
        }
    }
}
