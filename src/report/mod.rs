//! Reports over a shape-inferred graph: the cost table of `incc flops` and the parameter list.

pub mod cost;
pub mod params;
