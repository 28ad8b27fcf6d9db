//! The crate's error type: every failure names the file, tensor or setting at fault.

use std::path::PathBuf;

/// Errors raised by internvl.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An image could not be decoded or converted.
    #[error("cannot decode image {path}: {reason}")]
    Image {
        /// Where the image came from (a path or a description such as `<bytes>`).
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A configuration file is missing a key, has a wrong value or is not valid JSON.
    #[error("invalid config {path}: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint is missing a tensor, has an unexpected one, or one of the wrong shape.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint folder or file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A model could not be located (local folder or hub cache).
    #[error("cannot find model {model}: {reason}")]
    ModelNotFound {
        /// The id or path given by the user.
        model: String,
        /// Where we looked.
        reason: String,
    },
    /// An argument is out of range or inconsistent.
    #[error("{0}")]
    InvalidArgument(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A tokenizer file is corrupt, inconsistent or uses a feature that is not supported.
    #[error("tokenizer {origin}: {reason}")]
    Tokenizer {
        /// The file (or a description such as `<bytes>`) the tokenizer came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Tokenizer`] for `origin` with the given reason.
    pub fn tokenizer(origin: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Tokenizer {
            origin: origin.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Image`] for `path` with the given reason.
    pub fn image(path: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Error::Image {
            path: path.to_string(),
            reason: reason.to_string(),
        }
    }
}
