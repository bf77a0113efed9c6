//! A client connection's session over a real single-shard hub (simulated
//! disk), fed arbitrary bytes, optionally behind a valid handshake, in
//! chunks and clock ticks chosen by the input. Never panics, writes only
//! well-formed frames within frame_max, settles after every batch, and a
//! closed connection leaves no consumer or unacked delivery behind.
//! See `warren::fuzzing::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::session(data));
