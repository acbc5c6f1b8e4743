//! Feeds arbitrary bytes to the frame splitter and every decoder, as a
//! client or server stream would: no input may panic, allocate without
//! bound, or loop.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgkeel_wire::{BackendMessage, FrontendMessage, MAX_MESSAGE_LEN, StartupPacket};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = pgkeel_wire::split_startup(data) {
        let _ = StartupPacket::decode(&data[4..len]);
    }
    let mut rest = data;
    while let Ok(Some((_, len))) = pgkeel_wire::split_message(rest, MAX_MESSAGE_LEN) {
        let frame = &rest[..len];
        let _ = FrontendMessage::decode(frame);
        let _ = BackendMessage::decode(frame);
        rest = &rest[len..];
    }
});
