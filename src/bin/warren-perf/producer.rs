//! A producer connection: one thread, one or more publishing channels.
//! Messages are copied from a pre-encoded template into one buffer and
//! written in ~64 KiB batches; the send time is patched into the body.

use crate::conn::{Conn, Error, Result};
use crate::stats::{Local, Shared, now_ns};
use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use warren::protocol::methods::{BasicPublish, ConfirmSelect};
use warren::protocol::{
    FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Method, ShortStr, write_body_frames,
    write_header_frame, write_heartbeat, write_method_frame,
};

const BATCH_BYTES: usize = 64 * 1024;

/// What one producer channel publishes.
pub struct PubSpec {
    pub exchange: String,
    pub routing_key: String,
}

pub struct ProducerCfg {
    pub size: usize,
    pub persistent: bool,
    pub mandatory: bool,
    /// Outstanding confirms allowed per channel; 0: no confirms.
    pub window: usize,
    /// Messages per second per channel; 0: unlimited.
    pub rate: f64,
    /// Messages per channel.
    pub limit: Option<u64>,
}

struct Chan {
    ch: u16,
    template: Vec<u8>,
    ts_off: usize,
    sent: u64,
    /// Next publish sequence number (confirm mode), from 1.
    next_seq: u64,
    /// Lowest sequence number not yet confirmed.
    low: u64,
    /// Send time by seq % window; 0: confirmed.
    ring: Vec<u64>,
    outstanding: u64,
}

fn template(ch: u16, spec: &PubSpec, cfg: &ProducerCfg, frame_max: u32) -> (Vec<u8>, usize) {
    let mut t = BytesMut::new();
    write_method_frame(
        &mut t,
        ch,
        &Method::BasicPublish(BasicPublish {
            ticket: 0,
            exchange: ShortStr::from_string_lossy(&spec.exchange),
            routing_key: ShortStr::from_string_lossy(&spec.routing_key),
            mandatory: cfg.mandatory,
            immediate: false,
        }),
    );
    // Property flags: delivery-mode only, or nothing.
    let props: &[u8] = if cfg.persistent { &[0x10, 0x00, 2] } else { &[0, 0] };
    let size = cfg.size.max(8);
    write_header_frame(&mut t, ch, 60, size as u64, props);
    let ts_off = t.len() + 7;
    write_body_frames(&mut t, ch, &vec![0u8; size], frame_max);
    (t.to_vec(), ts_off)
}

pub struct Producer {
    conn: Conn,
    chans: Vec<Chan>,
    cfg: ProducerCfg,
    shared: Arc<Shared>,
    local: Local,
    start: u64,
}

impl Producer {
    pub fn new(mut conn: Conn, specs: &[PubSpec], cfg: ProducerCfg, shared: Arc<Shared>) -> Result<Self> {
        let mut chans = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let ch = i as u16 + 1;
            conn.open_channel(ch)?;
            if cfg.window > 0 {
                match conn.call(ch, &Method::ConfirmSelect(ConfirmSelect { nowait: false }))? {
                    Method::ConfirmSelectOk(_) => {}
                    m => {
                        return Err(Error::Protocol(format!(
                            "expected confirm.select-ok, got {}",
                            m.name()
                        )));
                    }
                }
            }
            let (template, ts_off) = template(ch, spec, &cfg, conn.frame_max);
            chans.push(Chan {
                ch,
                template,
                ts_off,
                sent: 0,
                next_seq: 1,
                low: 1,
                ring: vec![0; cfg.window],
                outstanding: 0,
            });
        }
        Ok(Producer {
            conn,
            chans,
            cfg,
            shared,
            local: Local::new(),
            start: now_ns(),
        })
    }

    fn done(&self) -> bool {
        match self.cfg.limit {
            Some(l) => self.chans.iter().all(|c| c.sent >= l && c.outstanding == 0),
            None => false,
        }
    }

    pub fn run(mut self) -> Result<()> {
        let per_msg = self.chans.first().map_or(64, |c| c.template.len());
        let batch_max = (BATCH_BYTES / per_msg / self.chans.len().max(1)).max(1) as u64;
        let mut out = BytesMut::with_capacity(BATCH_BYTES + per_msg * 2);
        let window = self.cfg.window as u64;
        let result = loop {
            if crate::STOP.load(Relaxed) {
                break Ok(());
            }
            if self.done() {
                break Ok(());
            }
            // Confirms, returns, flow control.
            if let Err(e) = self.read(false) {
                break Err(e);
            }
            let now = now_ns();
            let mut n = 0u64;
            let mut next_due = u64::MAX;
            for c in &mut self.chans {
                if self.conn.blocked || !self.conn.flow_active(c.ch) {
                    continue;
                }
                let mut allowed = batch_max;
                if let Some(l) = self.cfg.limit {
                    allowed = allowed.min(l.saturating_sub(c.sent));
                }
                if self.cfg.rate > 0.0 {
                    let due = ((now - self.start) as f64 * self.cfg.rate / 1e9) as u64 + 1;
                    allowed = allowed.min(due.saturating_sub(c.sent));
                    if due <= c.sent {
                        let at = self.start + ((c.sent as f64) * 1e9 / self.cfg.rate) as u64;
                        next_due = next_due.min(at);
                    }
                }
                if window > 0 {
                    allowed = allowed.min((c.low + window).saturating_sub(c.next_seq));
                }
                for _ in 0..allowed {
                    let at = out.len() + c.ts_off;
                    out.extend_from_slice(&c.template);
                    out[at..at + 8].copy_from_slice(&now.to_le_bytes());
                    if window > 0 {
                        c.ring[(c.next_seq % window) as usize] = now;
                        c.next_seq += 1;
                    }
                }
                c.sent += allowed;
                c.outstanding += if window > 0 { allowed } else { 0 };
                n += allowed;
            }
            if n > 0 {
                if let Err(e) = self.conn.write_raw(&out) {
                    break Err(e);
                }
                out.clear();
                self.shared.c.published.fetch_add(n, Relaxed);
            } else if next_due != u64::MAX && !self.conn.blocked {
                // Rate-limited: sleep until the next message is due (but
                // not longer than a few ms, to keep reading confirms).
                let wait = next_due.saturating_sub(now_ns()).min(5_000_000);
                std::thread::sleep(std::time::Duration::from_nanos(wait));
            } else if let Err(e) = self.read(true) {
                // Window full, blocked, or waiting for the last confirms.
                break Err(e);
            }
            self.local.maybe_flush(&self.shared, now);
        };
        self.local.flush(&self.shared);
        match result {
            Ok(()) | Err(Error::Stopped) => {
                let _ = self.conn.close();
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads and handles what the broker sent; `block`: wait up to 100 ms.
    fn read(&mut self, block: bool) -> Result<()> {
        if self.conn.rd.fill(&mut self.conn.sock, block)? == 0 {
            return Ok(());
        }
        let now = now_ns();
        let (mut confirmed, mut nacked, mut returned) = (0, 0, 0);
        while let Some(f) = self.conn.rd.next_frame()? {
            match f.kind {
                FRAME_METHOD => {
                    let p = self.conn.rd.payload(&f);
                    let ids = if p.len() >= 4 { [p[1], p[3]] } else { [0, 0] };
                    // basic.ack (60.80) / basic.nack (60.120): tag, bits.
                    if p.len() >= 13 && p[0] == 0 && p[2] == 0 && (ids == [60, 80] || ids == [60, 120]) {
                        let tag = u64::from_be_bytes(p[4..12].try_into().unwrap());
                        let multiple = p[12] & 1 != 0;
                        let n = self.confirm(f.channel, tag, multiple, now);
                        if ids[1] == 80 {
                            confirmed += n;
                        } else {
                            nacked += n;
                        }
                        continue;
                    }
                    let m = Conn::decode(p)?;
                    if let Some(Method::BasicReturn(_)) = self.conn.handle_common(f.channel, m)? {
                        returned += 1;
                    }
                }
                FRAME_HEARTBEAT => {
                    write_heartbeat(&mut self.conn.out);
                    self.conn.flush()?;
                }
                // Returned message content.
                FRAME_HEADER | FRAME_BODY => {}
                _ => {}
            }
        }
        let c = &self.shared.c;
        if confirmed > 0 {
            c.confirmed.fetch_add(confirmed, Relaxed);
        }
        if nacked > 0 {
            c.nacked.fetch_add(nacked, Relaxed);
        }
        if returned > 0 {
            c.returned.fetch_add(returned, Relaxed);
        }
        Ok(())
    }

    /// Settles `tag` (and everything before it if `multiple`); returns how
    /// many messages that settled.
    fn confirm(&mut self, ch: u16, tag: u64, multiple: bool, now: u64) -> u64 {
        let window = self.cfg.window as u64;
        let Some(c) = self.chans.get_mut(ch as usize - 1) else {
            return 0;
        };
        if window == 0 || tag >= c.next_seq {
            return 0;
        }
        let mut n = 0;
        let mut settle = |seq: u64, c: &mut Chan| {
            let slot = &mut c.ring[(seq % window) as usize];
            if *slot != 0 {
                self.local.confirm(now.saturating_sub(*slot));
                *slot = 0;
                n += 1;
            }
        };
        if multiple {
            for seq in c.low..=tag {
                settle(seq, c);
            }
        } else if tag >= c.low {
            settle(tag, c);
        }
        while c.low < c.next_seq && c.ring[(c.low % window) as usize] == 0 {
            c.low += 1;
        }
        c.outstanding -= n;
        n
    }
}
