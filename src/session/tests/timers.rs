//! Timers on virtual time: the session is told the time and asked for its
//! next deadline; nothing here sleeps or reads a clock.

use super::*;
use crate::session::{CLOSE_TIMEOUT_MS, LINGER_MAX_MS, Phase};

fn heartbeat() -> Frame {
    Frame::Heartbeat { channel: 0 }
}

/// Runs every timer due up to `until`, as the runtime would; returns the
/// times at which the session wrote something (and what), and stops once
/// it is closed.
fn run_until(p: &mut Peer, until: u64) -> Vec<(u64, Vec<Frame>)> {
    let mut wrote = Vec::new();
    while let Some(t) = p.s.poll_timeout() {
        if t > until {
            break;
        }
        p.now = t;
        p.s.handle_timeout(t, &mut p.b);
        let frames = p.frames();
        if !frames.is_empty() {
            // The runtime flushed it at once.
            p.s.note_written(t);
            wrote.push((t, frames));
        }
        if p.s.phase() == Phase::Closed {
            break;
        }
    }
    wrote
}

#[test]
fn handshake_must_finish_in_time() {
    // How far the client gets before going silent.
    let steps: Vec<Vec<(u16, Method)>> = vec![
        vec![],
        vec![(0, start_ok(CLIENT_CAPS, "PLAIN", plain("guest", "guest")))],
        vec![
            (0, start_ok(CLIENT_CAPS, "PLAIN", plain("guest", "guest"))),
            (0, tune_ok(2047, 131_072, 0)),
        ],
    ];
    for step in steps {
        let mut p = Peer::at(cfg(), 500);
        p.send_raw(&PROTOCOL_HEADER);
        for (ch, method) in step.clone() {
            p.send(ch, method);
        }
        p.frames();
        assert_eq!(p.s.poll_timeout(), Some(10_500), "{step:?}");
        p.s.handle_timeout(10_499, &mut p.b);
        assert_ne!(p.s.phase(), Phase::Closed);
        p.s.handle_timeout(10_500, &mut p.b);
        assert_eq!(p.s.phase(), Phase::Closed);
        assert_eq!(p.s.close_reason.as_deref(), Some("handshake timeout"));
        assert_eq!(p.s.poll_timeout(), None);
        assert_eq!(p.frames(), vec![]);
        assert!(!p.b.calls.iter().any(|c| matches!(c, Call::ConnectionClosed(_))));
    }
    // Open in time: no timer left (no heartbeat, no consumer timeout).
    let p = Peer::open();
    assert_eq!(p.s.poll_timeout(), None);
}

#[test]
fn heartbeat_sent_when_nothing_was_written_for_half_the_interval() {
    let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 2047, 131_072, 10);
    assert_eq!(p.s.heartbeat(), 10);
    assert_eq!(p.s.poll_timeout(), Some(5_000));
    // Early calls do nothing.
    p.s.handle_timeout(4_999, &mut p.b);
    assert_eq!(p.frames(), vec![]);
    p.s.handle_timeout(5_000, &mut p.b);
    assert_eq!(p.frames(), vec![heartbeat()]);
    assert_eq!(p.s.poll_timeout(), Some(10_000));
    // Something written in between postpones it.
    p.s.note_written(7_000);
    assert_eq!(p.s.poll_timeout(), Some(12_000));
    // Output waiting to be written counts as a sign of life.
    p.s.note_read(11_000);
    p.open_channel(1);
    p.send(1, Method::BasicQos(Default::default()));
    p.s.handle_timeout(12_000, &mut p.b);
    assert_eq!(p.frames(), vec![m(1, Method::BasicQosOk(BasicQosOk {}))]);
    assert_eq!(p.s.poll_timeout(), Some(17_000));
}

#[test]
fn silent_client_is_dropped_after_two_intervals() {
    let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 2047, 131_072, 10);
    let wrote = run_until(&mut p, 100_000);
    assert_eq!(
        wrote,
        vec![
            (5_000, vec![heartbeat()]),
            (10_000, vec![heartbeat()]),
            (15_000, vec![heartbeat()])
        ]
    );
    assert_eq!(p.now, 20_000);
    assert_eq!(p.s.phase(), Phase::Closed);
    assert_eq!(
        p.s.close_reason.as_deref(),
        Some("missed heartbeats from client, timeout: 10s")
    );
    assert_eq!(p.calls(), vec![Call::ConnectionClosed(CONN)]);
    assert_eq!(p.resume(), Status::Close);
}

#[test]
fn reads_keep_the_connection_alive() {
    let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 2047, 131_072, 10);
    // A heartbeat from the client every 15 s (less than 2 × 10 s).
    for at in [15_000, 30_000, 45_000] {
        run_until(&mut p, at);
        p.s.note_read(at);
        p.now = at;
        p.send_raw(&[8, 0, 0, 0, 0, 0, 0, 0xCE]);
    }
    assert_eq!(p.s.phase(), Phase::Running);
    run_until(&mut p, 64_999);
    assert_eq!(p.s.phase(), Phase::Running);
    run_until(&mut p, 65_000);
    assert_eq!(p.s.phase(), Phase::Closed);
}

#[test]
fn no_close_ok_within_the_close_timeout() {
    let mut p = Peer::open();
    p.open_channel(1);
    p.now = 1_000;
    p.send(1, Method::ChannelOpen(Default::default()));
    assert_eq!(p.s.phase(), Phase::Closing);
    assert_eq!(p.s.poll_timeout(), Some(1_000 + CLOSE_TIMEOUT_MS));
    p.s.handle_timeout(3_999, &mut p.b);
    assert_eq!(p.s.phase(), Phase::Closing);
    p.s.handle_timeout(4_000, &mut p.b);
    assert_eq!(p.s.phase(), Phase::Closed);
    // The reason logged stays the error that started the close.
    let text = "CHANNEL_ERROR - second 'channel.open' seen";
    assert_eq!(p.s.close_reason.as_deref(), Some(text));
    assert_eq!(p.calls(), vec![Call::ConnectionClosed(CONN)]);
}

/// After our close-ok the socket stays open at most min(heartbeat, 30 s).
#[test]
fn linger_after_close_ok() {
    for (hb, linger) in [(0, LINGER_MAX_MS), (10, 10_000), (60, LINGER_MAX_MS)] {
        let mut p = Peer::open_with(cfg(), CLIENT_CAPS, 2047, 131_072, hb);
        p.now = 2_000;
        p.s.note_read(2_000);
        p.send(0, connection_close(200, "bye", 0, 0));
        assert_eq!(p.s.phase(), Phase::Lingering);
        assert_eq!(p.s.poll_timeout(), Some(2_000 + linger), "heartbeat {hb}");
        p.s.handle_timeout(2_000 + linger - 1, &mut p.b);
        assert_eq!(p.s.phase(), Phase::Lingering);
        p.s.handle_timeout(2_000 + linger, &mut p.b);
        assert_eq!(p.s.phase(), Phase::Closed);
        assert_eq!(
            p.frames(),
            vec![m(0, Method::ConnectionCloseOk(ConnectionCloseOk {}))]
        );
    }
}

/// A delivery unacked for longer than the consumer timeout closes its
/// channel (406, RabbitMQ's text), at most a quarter of the timeout late.
#[test]
fn consumer_timeout_closes_the_channel() {
    for timeout in [1_000u64, 1_800_000] {
        let mut p = Peer::open_with(
            SessionConfig {
                consumer_timeout_ms: timeout,
                ..cfg()
            },
            CLIENT_CAPS,
            2047,
            131_072,
            0,
        );
        p.open_channel(1);
        p.open_channel(2);
        let c = p.consume(1, "c1", false);
        let d = p.consume(2, "c2", false);
        p.now = 100;
        p.deliver(c, 1);
        p.deliver(d, 2);
        p.frames();
        // Channel 2 acks in time.
        p.now = timeout;
        p.send(2, ack(1, false));
        p.calls();
        let wrote = run_until(&mut p, 2 * timeout);
        let text = format!(
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: {timeout} ms. This timeout value can be configured, see consumers doc guide to learn more"
        );
        let [(at, frames)] = &wrote[..] else {
            panic!("{wrote:?}")
        };
        assert_eq!(frames, &vec![m(1, channel_close(406, &text, 0, 0))]);
        assert!(
            *at > 100 + timeout && *at <= 100 + timeout + timeout / 4,
            "closed at {at}"
        );
        assert_eq!(
            p.calls(),
            vec![Call::DropConsumer(Q, c), Call::Settle(Q, 1, Settle::Requeue)]
        );
        assert_eq!(p.s.phase(), Phase::Running);
    }
}
