//! The syntax tree of one `.inc` file. Every node keeps its span; nothing is evaluated yet.

pub use super::keywords::{BinOp, LayerKind, OptionName, Type};
use crate::source::{FileId, Span};

#[derive(Clone, Debug)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug)]
pub struct File {
    pub id: FileId,
    pub items: Vec<Item>,
}

#[derive(Debug)]
pub enum Item {
    Import { path: String, span: Span },
    Defaults(Vec<DefaultRule>),
    Block(Def),
    Network(Def),
}

/// `conv: bn(eps = 0.001), relu, same` inside `defaults { ... }`.
#[derive(Clone, Debug)]
pub struct DefaultRule {
    pub kind: LayerKind,
    pub kind_span: Span,
    pub options: Vec<LayerOption>,
}

/// A `block` or `network` definition.
#[derive(Debug)]
pub struct Def {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug)]
pub struct Param {
    pub name: Ident,
    pub ty: Type,
    pub ty_span: Span,
    pub default: Option<Expr>,
}

/// A chain `a -> b -> c`. Its label names the whole chain.
#[derive(Debug)]
pub struct Stmt {
    pub label: Option<Ident>,
    pub elements: Vec<Element>,
    pub span: Span,
}

#[derive(Debug)]
pub struct Element {
    pub label: Option<Ident>,
    pub kind: ElementKind,
    pub span: Span,
}

#[derive(Debug)]
pub enum ElementKind {
    Layer(Layer),
    /// `inline` expands the block's body in the caller's scope (no name scope of its own).
    Call {
        block: Ident,
        args: Vec<Arg>,
        inline: bool,
    },
    Concat {
        branches: Vec<Stmt>,
    },
    Residual {
        args: Vec<Arg>,
        branches: Vec<Stmt>,
    },
    Repeat {
        count: Expr,
        body: Vec<Stmt>,
    },
    Group(Box<Stmt>),
}

#[derive(Clone, Debug)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
    pub span: Span,
}

#[derive(Debug)]
pub struct Layer {
    pub kind: LayerKind,
    pub kind_span: Span,
    /// `3x3`, `1x7`, `3x299x299`.
    pub dims: Option<(Vec<u64>, Span)>,
    /// The positional value: filters, units, drop probability.
    pub value: Option<Expr>,
    pub options: Vec<LayerOption>,
}

#[derive(Clone, Debug)]
pub enum OptionKind {
    Stride(Vec<Expr>),
    Pad(Vec<Expr>),
    Bn(Vec<Arg>),
    /// An option without a value (`OptionName::is_flag`).
    Flag(OptionName),
}

#[derive(Clone, Debug)]
pub struct LayerOption {
    pub kind: OptionKind,
    pub span: Span,
}

impl LayerOption {
    pub fn name(&self) -> OptionName {
        match &self.kind {
            OptionKind::Stride(_) => OptionName::Stride,
            OptionKind::Pad(_) => OptionName::Pad,
            OptionKind::Bn(_) => OptionName::Bn,
            OptionKind::Flag(flag) => *flag,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Var(String),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}
