//! Network definitions and checkpoint loading.
//!
//! One file per model family; module prefixes equal the released tensor names.

pub mod checkpoint;
pub mod folder;
pub mod hub;
pub mod intern_vit;
pub mod internvl_cg;
pub mod internvl_chat;
pub mod llm;
pub mod qllama;

pub use checkpoint::Checkpoint;
pub use folder::{ModelFolder, ModelKind};
pub use intern_vit::{InternVisionConfig, InternVisionModel, VisionOutput};
