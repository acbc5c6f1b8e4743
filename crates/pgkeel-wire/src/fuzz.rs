//! The body of the decode fuzz target, shared by the coverage-guided
//! target (`fuzz/`, cargo-fuzz on nightly) and the time-bounded stable
//! run in the test suite, so both exercise exactly the same paths.

use crate::{BackendMessage, FrontendMessage, MAX_MESSAGE_LEN, StartupPacket};

/// Feeds `data` to the startup and message splitters and every decoder,
/// as a client or server stream would. It must never panic, allocate
/// without bound or loop: every error is a value. A frontend message that
/// decodes must encode to exactly its frame (the proxy relays what it
/// decoded, and text in any client encoding is kept as sent).
pub fn decode_everything(data: &[u8]) {
    // Slicing with the splitters' lengths is deliberate: a length they
    // get wrong panics here, and the fuzzer reports it.
    if let Ok(Some(len)) = crate::split_startup(data) {
        let _ = StartupPacket::decode(&data[4..len]);
    }
    let mut rest = data;
    while let Ok(Some((_, len))) = crate::split_message(rest, MAX_MESSAGE_LEN) {
        let frame = &rest[..len];
        if let Ok(msg) = FrontendMessage::decode(frame) {
            let mut again = Vec::with_capacity(frame.len());
            msg.encode(&mut again);
            assert_eq!(again, frame, "a frontend message did not round-trip");
            // Decoding it again (as the proxy does) gives the same message.
            assert_eq!(
                FrontendMessage::decode_again(frame).ok(),
                Some(msg),
                "decode_again differs from decode"
            );
        }
        let _ = BackendMessage::decode(frame);
        rest = &rest[len..];
    }
}
