//! The ONNX back end: IR + weights -> ONNX `ModelProto` (prost types generated from the official
//! schema), written atomically, with external data past 2 GB; and a readable text form of any
//! model for snapshots.

pub mod emit;
pub mod lower;
pub mod proto;
pub mod text;
