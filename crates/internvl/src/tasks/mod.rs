//! End-user operations built from models and processing.

pub mod features;
