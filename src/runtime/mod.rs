//! Running compiled models with ONNX Runtime through the `ort` crate.

pub mod ortlib;
