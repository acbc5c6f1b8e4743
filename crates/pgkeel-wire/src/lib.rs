//! An I/O-free codec for PostgreSQL's frontend/backend protocol 3: frame
//! splitting that never trusts a declared length, typed views of the
//! messages a pooling proxy needs (borrowed, so relaying copies nothing),
//! their encoders, and the server side of SCRAM-SHA-256.
//!
//! Nothing here touches a socket: the proxy feeds bytes in and writes the
//! bytes it gets back, so every rule is unit- and property-tested and the
//! decoder is fuzzed.

pub mod backend;
mod cursor;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod fuzz;
pub mod md5;
pub mod scram;
pub mod scram_client;
pub mod startup;

pub use backend::{BackendMessage, ErrorFields, TxStatus};
pub use error::WireError;
pub use frame::{MAX_MESSAGE_LEN, MAX_STARTUP_LEN, split_message, split_startup};
pub use frontend::FrontendMessage;
pub use startup::StartupPacket;
