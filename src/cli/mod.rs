//! The commands, one file per group; `main.rs` holds the table that names them.

pub mod compile;
pub mod exec;
pub mod inspect;
pub mod options;
pub mod train;
