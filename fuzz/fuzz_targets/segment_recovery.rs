//! Storage recovery (queue store segments and ack logs, the topology log)
//! from arbitrary files on the simulated disk, with checksummed records
//! the input can ask for. Never panics; recovers only valid, unacked
//! records and every one of the valid prefix; a second recovery gives the
//! same as the first. See `warren::fuzzing::segment_recovery`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::segment_recovery(data));
