//! Subcommands that need ONNX Runtime.

pub mod exec;
pub mod train;
