//! Configuration errors. Each names the offending key or value and says what
//! to write instead.

use std::path::PathBuf;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown or a value has the wrong type.
    #[error(
        "invalid configuration in {origin}: {message}\nhint: `pgkeel init` writes an annotated file listing every key with its default"
    )]
    Parse {
        /// Where the bad text came from (a file, or the environment).
        origin: String,
        /// The parser's message, with line and column when known.
        message: String,
    },
    /// The values parse but do not make a working cluster.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl ConfigError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ConfigError::Invalid(message.into())
    }
}
