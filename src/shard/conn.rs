//! A client connection's task: socket ↔ session glue. Reads are batched
//! (every complete frame in the buffer is processed before the next read)
//! and so are writes (all output of a step goes out in one write).

use super::ctx::{ConnState, Ctx};
use super::state::{ConnHandle, ConnMeta, Shard};
use crate::session::{Phase, Session, Status};
use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{Preallocated, TcpStream};
use glommio::timer::Timer;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

const RECV_BUFFER: usize = 64 * 1024;
/// How long we wait for `connection.close-ok` after sending `connection.close`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(shard: Rc<Shard>, stream: TcpStream) {
    let id = shard.new_conn_id();
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let mut stream = stream.buffered_with(Preallocated::new(RECV_BUFFER));
    let local = stream.local_addr().ok();
    let name = match (peer, local) {
        (Some(p), Some(l)) => format!("{p} -> {l}"),
        _ => format!("{id:?}"),
    };
    let handle = Rc::new(ConnHandle {
        inbox: RefCell::new(VecDeque::new()),
        notify: Default::default(),
        meta: RefCell::new(ConnMeta {
            name,
            peer,
            connected_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            state: "starting",
            ..Default::default()
        }),
    });
    shard.conns.borrow_mut().insert(id, handle.clone());
    shard.stats.connections[shard.id as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut session = Session::new(id, shard.session_cfg.clone());
    let state = ConnState {
        peer,
        ..Default::default()
    };
    let reason = serve(&shard, &handle, &state, &mut stream, &mut session).await;
    let mut ctx = Ctx {
        shard: &shard,
        conn: &state,
    };
    session.abort(&reason, &mut ctx);
    if !session.output().is_empty() {
        let out = std::mem::take(session.output());
        let _ = write_all(&mut stream, &out).await;
    }
    shard.conns.borrow_mut().remove(&id);
    shard.stats.connections[shard.id as usize].fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    let left: Vec<_> = handle.inbox.borrow_mut().drain(..).collect();
    for ev in left {
        session.on_event(ev, &mut ctx);
    }
    shard.after_step();
    let _ = stream.close().await;
    match session.close_reason.as_deref() {
        Some(r) if r != "client closed" && r != "bad protocol header" => {
            log::info!("connection {:?} from {:?} closed: {r}", id, peer)
        }
        _ => log::debug!("connection {:?} from {:?} closed", id, peer),
    }
}

async fn write_all(stream: &mut TcpStream<Preallocated>, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}

/// Runs the connection until it ends; returns why.
async fn serve(
    shard: &Rc<Shard>,
    handle: &Rc<ConnHandle>,
    state: &ConnState,
    stream: &mut TcpStream<Preallocated>,
    session: &mut Session,
) -> String {
    let limits = &shard.cfg.limits;
    let mut rbuf = BytesMut::with_capacity(RECV_BUFFER);
    let started = Instant::now();
    let mut last_read = started;
    let mut last_write = started;
    let mut closing_since: Option<Instant> = None;
    let mut described = (Phase::Header, started);
    // Queues that asked this connection to stop publishing for now.
    let mut throttled_by: Vec<crate::ids::QueueId> = Vec::new();
    let mut blocked = false;
    let (mut recv_oct, mut send_oct) = (0u64, 0u64);
    let mut eof = false;
    let mut timer = Timer::new(Duration::from_secs(1));
    loop {
        let mut ctx = Ctx { shard, conn: state };
        session.set_clock(super::state::now_ms());
        // Events from queues and other shards.
        let mut any = false;
        let mut describe_now = false;
        loop {
            let ev = handle.inbox.borrow_mut().pop_front();
            let Some(ev) = ev else { break };
            match ev {
                crate::session::Event::Describe => {
                    describe_now = true;
                    continue;
                }
                crate::session::Event::Throttle { queue, on } => {
                    throttled_by.retain(|q| *q != queue);
                    if on {
                        throttled_by.push(queue);
                    }
                    continue;
                }
                _ => {}
            }
            session.on_event(ev, &mut ctx);
            any = true;
        }
        if any {
            session.end_batch(&mut ctx);
        }
        // Input.
        let out_high = session.output().len() >= limits.write_buffer_high;
        let congested = shard.outbox_congested();
        // Under the memory alarm, connections that publish stop being read
        // (consumers keep going and free memory).
        let alarm = session.stats.published > 0
            && shard
                .stats
                .memory_alarm
                .load(std::sync::atomic::Ordering::Relaxed);
        if alarm != blocked {
            blocked = alarm;
            session.write_blocked(blocked);
            if blocked {
                timer.reset(Duration::from_millis(250));
            }
        }
        let can_feed =
            !out_high && !congested && !blocked && throttled_by.is_empty() && !session.over_limits();
        if can_feed
            && !rbuf.is_empty()
            && !session.is_paused()
            && session.feed(&mut rbuf, &mut ctx) == Status::Close
        {
            session.abort("closed", &mut ctx);
        }
        shard.after_step();
        // Keep the management view fresh: at once when the phase changes,
        // otherwise about once a second.
        let now = Instant::now();
        if describe_now || described.0 != session.phase() || now - described.1 > Duration::from_secs(1) {
            describe(&handle.meta, session, recv_oct, send_oct);
            described = (session.phase(), now);
        }
        if session.phase() == Phase::Closing && closing_since.is_none() {
            closing_since = Some(Instant::now());
        }
        if session.phase() == Phase::Closed {
            if !session.output().is_empty() {
                let out = std::mem::take(session.output());
                let _ = write_all(stream, &out).await;
            }
            return session.close_reason.clone().unwrap_or_else(|| "closed".into());
        }
        if eof && rbuf.is_empty() || eof && !session.is_paused() && can_feed {
            return "client closed TCP connection".into();
        }
        let want_read =
            can_feed && !eof && rbuf.len() < limits.read_buffer.max(limits.frame_max as usize * 2);
        // Wait for something to do: socket readable/writable, an event, or
        // the timer.
        let mut fired = false;
        let mut wrote_all = false;
        let mut read_full = false;
        let io = poll_fn(|cx| {
            let mut ready = false;
            if congested {
                shard.drain_waiters.borrow_mut().push(cx.waker().clone());
            }
            let out = session.output();
            let had_output = !out.is_empty();
            while !out.is_empty() {
                match Pin::new(&mut *stream).poll_write(cx, out) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        out.advance(n);
                        send_oct += n as u64;
                        last_write = Instant::now();
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if had_output && out.is_empty() {
                wrote_all = true;
                ready = true;
            }
            if want_read {
                match Pin::new(&mut *stream).poll_fill_buf(cx) {
                    Poll::Ready(Ok(data)) => {
                        let n = data.len();
                        if n == 0 {
                            eof = true;
                        } else {
                            rbuf.extend_from_slice(data);
                            read_full = n >= RECV_BUFFER;
                            Pin::new(&mut *stream).consume(n);
                            recv_oct += n as u64;
                            last_read = Instant::now();
                        }
                        ready = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if !handle.inbox.borrow().is_empty() {
                ready = true;
            } else {
                handle.notify.register(cx);
                if !handle.inbox.borrow().is_empty() {
                    ready = true;
                }
            }
            if Pin::new(&mut timer).poll(cx).is_ready() {
                fired = true;
                ready = true;
            }
            if ready { Poll::Ready(Ok(())) } else { Poll::Pending }
        })
        .await;
        if let Err(e) = io {
            return format!("socket error: {e}");
        }
        if wrote_all {
            session.report_written(&mut Ctx { shard, conn: state });
        }
        if fired {
            session.check_consumer_timeouts(&mut Ctx { shard, conn: state });
            let now = Instant::now();
            let hb = session.heartbeat() as u64;
            match session.phase() {
                Phase::Header | Phase::Start | Phase::Tune | Phase::Open
                    if now - started > limits.handshake_timeout =>
                {
                    return "handshake timeout".into();
                }
                Phase::Closing if closing_since.is_some_and(|t| now - t > CLOSE_TIMEOUT) => {
                    return session
                        .close_reason
                        .clone()
                        .unwrap_or_else(|| "close timeout".into());
                }
                _ => {}
            }
            if hb > 0 && session.phase() == Phase::Running {
                if now - last_read > Duration::from_secs(hb * 2) {
                    return format!("missed heartbeats from client, timeout: {hb}s");
                }
                if now - last_write >= Duration::from_millis(hb * 500) && session.output().is_empty() {
                    session.write_heartbeat();
                }
            }
            let tick = if blocked {
                // Look again soon for the alarm to clear.
                Duration::from_millis(250)
            } else if hb > 0 && session.phase() == Phase::Running {
                Duration::from_millis((hb * 500).max(500))
            } else {
                Duration::from_secs(1)
            };
            // Check the consumer timeout often enough for short settings.
            let timeout = limits.consumer_timeout;
            let tick = if timeout.is_zero() {
                tick
            } else {
                tick.min((timeout / 4).max(Duration::from_millis(100)))
            };
            timer.reset(tick);
        }
        // glommio polls sockets only when no task is runnable (or at its
        // 100 ms preemption tick). A connection with input always waiting
        // would stay runnable and leave every other socket unpolled, so
        // after a full buffer of input (more is probably waiting) it waits
        // for the reactor's next turn (a timer fires only from there)
        // instead of just yielding. A short read drained the socket: the
        // next read parks on the reactor anyway, and a timer per wake-up
        // would cost more than the message at low rates.
        if read_full {
            Timer::new(Duration::from_micros(20)).await;
        } else {
            glommio::yield_if_needed().await;
        }
    }
}

fn describe(meta: &RefCell<ConnMeta>, session: &Session, recv_oct: u64, send_oct: u64) {
    let mut m = meta.borrow_mut();
    m.state = match session.phase() {
        Phase::Header | Phase::Start | Phase::Tune | Phase::Open => "starting",
        Phase::Running => "running",
        Phase::Closing | Phase::Closed => "closing",
    };
    if m.user.is_empty() && !session.user().is_empty() {
        m.user = session.user().to_string();
        m.client_properties = crate::admin::json::table_to_json(&session.client_properties);
    }
    if let Some((_, vhost)) = session.vhost()
        && m.vhost.is_empty()
    {
        m.vhost = vhost.to_string();
    }
    m.frame_max = session.frame_max();
    m.heartbeat = session.heartbeat();
    m.channels = session.channel_summaries();
    m.recv_oct = recv_oct;
    m.send_oct = send_oct;
    m.published = session.stats.published;
    m.delivered = session.stats.delivered;
    m.confirmed = session.stats.confirmed;
}
