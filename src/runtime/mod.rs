//! Running compiled models with ONNX Runtime through the `ort` crate.

pub mod bench;
pub mod error;
pub mod images;
pub mod ortlib;
pub mod profile;
pub mod providers;
pub mod session;
pub mod tensor;
pub mod topk;
