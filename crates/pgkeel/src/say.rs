//! Printing to stdout that treats a closed pipe (`pgkeel status | head`)
//! as the reader being done, not as a crash.

use std::io::Write;

/// Writes one line to stdout; exits quietly if the reader went away.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`line`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say::line(&format!($($arg)*))
    };
}
