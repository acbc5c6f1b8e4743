//! Feeds arbitrary bytes to the frame splitter and every decoder, as a
//! client or server stream would: no input may panic, allocate without
//! bound, or loop. The body is shared with the bounded stable run in
//! `crates/pgkeel-wire/tests/fuzz_bounded.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pgkeel_wire::fuzz::decode_everything(data);
});
