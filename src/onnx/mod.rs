//! The ONNX back end: IR -> ONNX `ModelProto` (prost types generated from the official schema).

pub mod proto;
