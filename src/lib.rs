//! incc: a compiler from declarative descriptions of Inception-family networks (`.inc` files) to a
//! typed graph IR with exact shapes and costs, and on to ONNX. See ARCHITECTURE.md for the map.

pub mod data;
pub mod diag;
pub mod dist;
pub mod driver;
pub mod elab;
pub mod error;
pub mod front;
pub mod fsutil;
pub mod interrupt;
pub mod ir;
pub mod onnx;
pub mod passes;
pub mod plot;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod source;
pub mod train;
pub mod trainer;
pub mod weights;

pub use error::Error;
