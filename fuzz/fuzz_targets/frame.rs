//! Frames: the frame decoder, then every payload decoder (methods, content
//! headers, properties, the zero-copy `basic.publish` parser) over
//! arbitrary bytes. Never panics; decoders agree with each other; what
//! decodes re-encodes to a fixed point. See `warren::fuzzing::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::fuzzing::frame(data));
