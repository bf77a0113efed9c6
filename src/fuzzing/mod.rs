//! The harnesses of the coverage-guided fuzz targets in `fuzz/` (cargo-fuzz,
//! nightly): each takes arbitrary bytes and checks a property, panicking
//! when it does not hold. The fuzz targets are one call each; a unit test
//! (`fuzzing::tests`, stable, part of `cargo test --lib`) replays every
//! file of the committed corpus (`fuzz/corpus/<target>/`) through the same
//! functions, so the seeds and every crash the fuzzers found stay checked.
//!
//! * [`frame`]: the frame decoder and everything that decodes a frame's
//!   payload (methods, content headers, properties, the zero-copy publish
//!   parser) never panic, agree with each other, and re-encode to what
//!   they decoded.
//! * [`field_table`]: field tables decode or fail cleanly, re-encode to as
//!   many bytes as they were read from, and the allocation-free validator
//!   accepts exactly what the decoder accepts.
//! * [`session`]: a connection's session over a real single-shard hub on
//!   a simulated disk, fed arbitrary bytes (optionally behind a valid
//!   handshake) in chunks and clock ticks the input chooses: never
//!   panics, writes only well-formed frames, and once the connection is
//!   gone no queue keeps a consumer or an unacked message of it.
//! * [`segment_recovery`]: a queue store and a topology log recovered from
//!   arbitrary files (with records whose checksums the harness may fix, so
//!   the parsers behind the checksum are reached): never panics, recovers
//!   every valid record up to the first damage and only valid records,
//!   and a second recovery gives the same as the first.

pub mod seeds;
mod segment;
mod session;
mod wire;

pub use segment::segment_recovery;
pub use session::session;
pub use wire::{field_table, frame};

/// A harness: checks its property on one input, panics if it fails.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by name (as in `fuzz/fuzz_targets/` and
/// `fuzz/corpus/`).
pub const TARGETS: &[(&str, Harness)] = &[
    ("frame", frame),
    ("field_table", field_table),
    ("session", session),
    ("segment_recovery", segment_recovery),
];

#[cfg(test)]
mod tests;
