//! Network definitions and checkpoint loading.
//!
//! One file per model family; module prefixes equal the released tensor names.

pub mod checkpoint;
pub mod hub;
pub mod intern_vit;
pub mod vision;

pub use checkpoint::Checkpoint;
pub use intern_vit::{InternVisionConfig, InternVisionModel, VisionOutput};
pub use vision::{ModelKind, VisionModelFolder};
