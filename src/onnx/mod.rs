//! The ONNX back end: IR + weights -> ONNX `ModelProto` (prost types generated from the official
//! schema), written atomically, with external data past 2 GB; and a readable text form of any
//! model for snapshots. The ops write proto-free nodes (`ir::lower`); `forward` is the one
//! forward lowering (inference graph and training step), `convert` makes protobuf of its nodes.

pub mod convert;
pub mod emit;
pub mod forward;
pub mod proto;
pub mod text;
