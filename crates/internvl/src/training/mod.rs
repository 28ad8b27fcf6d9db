//! Training: the losses of the release's objectives (stage-2 ITC / ITM / ITG, retrieval
//! fine-tuning, CLIP-style contrastive, SFT), trainable parameters with autograd, the SFT data
//! pipeline, and the trainer.

pub mod contrastive;
pub mod curves;
pub mod datasets;
pub mod init;
pub mod losses;
pub mod objectives;
pub mod optim;
pub mod params;
pub mod probe;
pub mod sft;
pub mod sft_data;
pub mod stage2;
pub mod trainer;
