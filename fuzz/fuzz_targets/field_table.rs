//! Field tables: decode arbitrary bytes or fail with 501, never panic;
//! re-encode to as many bytes as were read, to a fixed point; the
//! allocation-free validator accepts exactly what the decoder accepts.
//! See `warren::fuzzing::field_table`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::field_table(data));
