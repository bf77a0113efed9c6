//! Feeds the queue balancer (`hub::balance`): once a second each shard
//! publishes its thread's CPU use and hands every shard's to its hub.

use super::state::Shard;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

pub async fn run(shard: Rc<Shard>) {
    if !shard.hub.borrow().balances() {
        return;
    }
    // The first second holds start-up work (recovery, the listeners):
    // measured, it would send new queues off shard 0 for no load.
    glommio::timer::sleep(Duration::from_secs(1)).await;
    let mut last = (Instant::now(), super::batching::thread_cpu_us());
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), super::batching::thread_cpu_us());
        let wall = now.0.duration_since(last.0).as_micros().max(1) as u64;
        let permille = (now.1.saturating_sub(last.1) * 1000 / wall).min(1000) as u32;
        last = now;
        let stats = &shard.stats.shard_cpu;
        stats[shard.id as usize].store(permille, Relaxed);
        let cpu: Vec<f32> = stats.iter().map(|c| c.load(Relaxed) as f32 / 1000.0).collect();
        let wall_ms = super::state::now_ms();
        shard.hub.borrow_mut().balance_tick(&cpu, wall_ms);
        shard.after_step(wall_ms);
    }
}
