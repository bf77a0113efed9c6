//! A consumer connection: one thread, one or more consuming channels.
//! Deliveries are parsed in the read buffer; acks are gathered and written
//! once per read.

use crate::conn::{Conn, Error, Result};
use crate::stats::{Local, Shared, now_ns};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use warren::protocol::methods::{BasicConsume, BasicQos};
use warren::protocol::{
    FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Method, ShortStr, write_basic_ack,
    write_heartbeat,
};

pub struct ConsumerCfg {
    pub autoack: bool,
    pub prefetch: u16,
    /// Ack every this many deliveries (multiple=true when > 1).
    pub multi_ack: u64,
    /// Record publish→deliver latency (producers are in this process).
    pub measure: bool,
}

#[derive(Default)]
struct Chan {
    last_tag: u64,
    unacked: u64,
    /// Body bytes still to come for the current message.
    body_left: u64,
    /// The next body frame is the message's first.
    first_body: bool,
}

pub struct Consumer {
    conn: Conn,
    chans: Vec<Chan>,
    cfg: ConsumerCfg,
    shared: Arc<Shared>,
    local: Local,
}

impl Consumer {
    /// Opens a channel per queue, sets prefetch and starts consuming.
    pub fn new(mut conn: Conn, queues: &[String], cfg: ConsumerCfg, shared: Arc<Shared>) -> Result<Self> {
        let mut chans = Vec::new();
        for (i, _) in queues.iter().enumerate() {
            let ch = i as u16 + 1;
            conn.open_channel(ch)?;
            if !cfg.autoack && cfg.prefetch > 0 {
                let qos = BasicQos {
                    prefetch_size: 0,
                    prefetch_count: cfg.prefetch,
                    global: false,
                };
                match conn.call(ch, &Method::BasicQos(qos))? {
                    Method::BasicQosOk(_) => {}
                    m => {
                        return Err(Error::Protocol(format!(
                            "expected basic.qos-ok, got {}",
                            m.name()
                        )));
                    }
                }
            }
            chans.push(Chan::default());
        }
        // Deliveries may start before the last consume-ok: the main loop
        // takes the replies.
        for (i, q) in queues.iter().enumerate() {
            conn.send(
                i as u16 + 1,
                &Method::BasicConsume(BasicConsume {
                    queue: ShortStr::from_string_lossy(q),
                    no_ack: cfg.autoack,
                    ..Default::default()
                }),
            );
        }
        conn.flush()?;
        Ok(Consumer {
            conn,
            chans,
            cfg,
            shared,
            local: Local::new(),
        })
    }

    pub fn run(mut self) -> Result<()> {
        let r = self.run_loop();
        self.local.flush(&self.shared);
        match r {
            Ok(()) | Err(Error::Stopped) => {
                let _ = self.conn.close();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn run_loop(&mut self) -> Result<()> {
        let multi = self.cfg.multi_ack.max(1);
        let every = match self.cfg.prefetch {
            0 => multi,
            p => multi.min(p as u64),
        };
        while !crate::STOP.load(Relaxed) {
            let got = self.conn.rd.fill(&mut self.conn.sock, true)?;
            let now = now_ns();
            if got == 0 {
                // Quiet: ack whatever is pending so the broker can go on.
                self.ack_pending(multi > 1);
                self.conn.flush()?;
                self.local.maybe_flush(&self.shared, now);
                continue;
            }
            let mut delivered = 0u64;
            while let Some(f) = self.conn.rd.next_frame()? {
                let Some(c) = self.chans.get_mut((f.channel as usize).wrapping_sub(1)) else {
                    if f.kind == FRAME_METHOD {
                        let m = Conn::decode(self.conn.rd.payload(&f))?;
                        self.conn.handle_common(f.channel, m)?;
                    } else if f.kind == FRAME_HEARTBEAT {
                        write_heartbeat(&mut self.conn.out);
                    }
                    continue;
                };
                let p = self.conn.rd.payload(&f);
                match f.kind {
                    FRAME_METHOD => {
                        // basic.deliver (60.60): consumer tag, delivery tag, ...
                        if p.len() >= 5 && p[..4] == [0, 60, 0, 60] {
                            let at = 5 + p[4] as usize;
                            if p.len() >= at + 8 {
                                c.last_tag = u64::from_be_bytes(p[at..at + 8].try_into().unwrap());
                            }
                            continue;
                        }
                        let m = Conn::decode(p)?;
                        if let Some(Method::BasicCancel(_)) = self.conn.handle_common(f.channel, m)? {
                            eprintln!(
                                "warren-perf: consumer on channel {} cancelled by the broker",
                                f.channel
                            );
                        }
                    }
                    FRAME_HEADER if p.len() >= 12 => {
                        c.body_left = u64::from_be_bytes(p[4..12].try_into().unwrap());
                        c.first_body = true;
                        if c.body_left == 0 {
                            delivered += 1;
                            c.unacked += 1;
                        }
                    }
                    FRAME_BODY => {
                        if c.first_body && self.cfg.measure && p.len() >= 8 {
                            let ts = u64::from_le_bytes(p[..8].try_into().unwrap());
                            if ts <= now {
                                self.local.deliver(now - ts);
                            }
                        }
                        c.first_body = false;
                        c.body_left = c.body_left.saturating_sub(p.len() as u64);
                        if c.body_left == 0 {
                            delivered += 1;
                            c.unacked += 1;
                        }
                    }
                    FRAME_HEARTBEAT => write_heartbeat(&mut self.conn.out),
                    _ => {}
                }
                if !self.cfg.autoack && c.unacked >= every {
                    write_basic_ack(&mut self.conn.out, f.channel, c.last_tag, multi > 1);
                    c.unacked = 0;
                }
            }
            if self.cfg.autoack {
                for c in &mut self.chans {
                    c.unacked = 0;
                }
            }
            self.conn.flush()?;
            if delivered > 0 {
                self.shared.c.delivered.fetch_add(delivered, Relaxed);
            }
            self.local.maybe_flush(&self.shared, now);
        }
        Ok(())
    }

    fn ack_pending(&mut self, multiple: bool) {
        if self.cfg.autoack {
            return;
        }
        for (i, c) in self.chans.iter_mut().enumerate() {
            if c.unacked > 0 {
                write_basic_ack(&mut self.conn.out, i as u16 + 1, c.last_tag, multiple);
                c.unacked = 0;
            }
        }
    }
}
