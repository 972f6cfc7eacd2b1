//! The front end: `.inc` text -> AST with spans (pest grammar in `grammar/incc.pest`, keywords in
//! `keywords`).

pub mod ast;
pub mod keywords;
pub mod load;
pub mod parse;
