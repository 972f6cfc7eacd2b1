//! The front end: `.inc` text -> AST with spans (pest grammar in `grammar/incc.pest`).

pub mod ast;
pub mod load;
pub mod parse;
