//! internvl: the InternVL vision-language model family in Rust.
//!
//! * [`models`]: network definitions (InternViT, ...) and checkpoint loading.
//! * [`processing`]: image decoding, PIL-exact resizing, normalisation and tiling.
//! * [`tasks`]: end-user operations built from models and processing (feature extraction, ...).
#![warn(missing_docs)]

pub mod benchmark;
pub mod error;
pub mod evaluation;
pub mod models;
pub mod ops;
pub mod processing;
pub mod tasks;
pub mod training;

pub use error::{Error, Result};
