//! One test binary for the whole suite (one link, shared build). Snapshots live in `snapshots/`.

mod architecture;
mod cli;
mod common;
mod data;
mod distributed;
mod errors;
mod language;
mod mutations;
mod networks;
mod numerics;
mod onnx;
mod plot;
mod portability;
mod reliability;
mod residual;
mod runtime;
mod train;
mod trainer;
