//! End-user operations built from models and processing.

pub mod chat;
pub mod contrastive;
pub mod evaluate;
pub mod features;
