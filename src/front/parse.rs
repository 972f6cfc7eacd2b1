//! pest parse tree -> AST. Syntax errors become located diagnostics that name what was expected.

use super::ast::*;
use crate::diag::Diagnostic;
use crate::source::{FileId, Span};
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::{Pair, Pairs};
use pest::{Parser, Token};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/incc.pest"]
struct IncParser;

pub fn parse(file: FileId, text: &str) -> Result<File, Diagnostic> {
    let mut pairs = IncParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    check_limits(file, text, &pairs)?;
    let root = pairs.next().expect("the file rule always produces one pair");
    let cx = Cx { file };
    let items = root.into_inner().filter(|p| p.as_rule() != Rule::EOI).map(|p| cx.item(p)).collect();
    Ok(File { id: file, items })
}

/// Deepest nesting of braces, groups and parenthesised expressions. Building the AST, elaborating
/// and evaluating recurse once per level, so the limit keeps them far from the end of the stack.
const MAX_NESTING: usize = 64;
/// Most operators (and signs) in one expression: each is one level of the evaluator's recursion.
const MAX_OPERATORS: usize = 256;

/// Checks the limits above on the parse tree, without recursion (it may be arbitrarily deep).
fn check_limits(file: FileId, text: &str, pairs: &Pairs<Rule>) -> Result<(), Diagnostic> {
    let nests = |rule| matches!(rule, Rule::body | Rule::branches | Rule::group | Rule::expr);
    let (mut depth, mut exprs, mut operators) = (0, 0, 0);
    for token in pairs.clone().tokens() {
        match token {
            Token::Start { rule, pos } => {
                let at = Span::new(file, pos.pos(), pos.pos() + text[pos.pos()..].chars().next().map_or(0, char::len_utf8));
                if nests(rule) {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Err(Diagnostic::error(format!("nested too deeply: more than {MAX_NESTING} levels of braces and parentheses"))
                            .at(at, format!("level {depth} starts here")));
                    }
                }
                if rule == Rule::expr {
                    if exprs == 0 {
                        operators = 0;
                    }
                    exprs += 1;
                }
                if matches!(rule, Rule::add_op | Rule::mul_op | Rule::neg) {
                    operators += 1;
                    if operators > MAX_OPERATORS {
                        return Err(
                            Diagnostic::error(format!("expression too long: more than {MAX_OPERATORS} operators")).at(at, format!("operator {operators}"))
                        );
                    }
                }
            }
            Token::End { rule, .. } => {
                if nests(rule) {
                    depth -= 1;
                }
                if rule == Rule::expr {
                    exprs -= 1;
                }
            }
        }
    }
    Ok(())
}

fn syntax_error(file: FileId, text: &str, e: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    let line_end = text[start..].find(['\n', '\r']).map_or(text.len(), |n| start + n);
    let unterminated = text[start..line_end].starts_with('"') && !text[start + 1..line_end].contains('"');
    // Point at the offending token; at the end of a line or of the file, at that position.
    let end = if end > start {
        end
    } else if unterminated {
        line_end
    } else {
        let rest = &text[start..line_end];
        let token = rest.find([' ', '\t', '(', ')', '{', '}', ',']).unwrap_or(rest.len());
        start + if token > 0 { token } else { rest.chars().next().map_or(0, char::len_utf8) }
    };
    let found = if start >= text.len() {
        "the end of the file".to_string()
    } else if unterminated {
        "a string with no closing `\"` on its line".to_string()
    } else {
        let token = &text[start..end];
        if token.trim().is_empty() {
            "the end of the line".to_string()
        } else {
            format!("`{}`", token.escape_debug())
        }
    };
    let span = Span::new(file, start, end);
    let positives = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => positives,
        ErrorVariant::CustomError { message } => {
            // pest's own guard against running out of stack ("stack limit reached").
            return Diagnostic::error(format!("nested too deeply to parse ({message})"))
                .at(span, "here")
                .note(format!("at most {MAX_NESTING} levels of braces and parentheses are allowed"));
        }
    };
    let mut names: Vec<&str> = positives.iter().map(|r| rule_name(*r)).collect();
    names.sort();
    names.dedup();
    let expected = closers(text, start).into_iter().chain(names).collect::<Vec<_>>().join(", ");
    let d = Diagnostic::error(format!("syntax error: expected {expected}; found {found}")).at(span, format!("expected {expected}"));
    // `pool 3x3`: a name that is not a layer reads as a block call, which then cannot take sizes.
    let word = text[..start].trim_end_matches([' ', '\t']);
    let word = &word[word.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1)..];
    if positives.contains(&Rule::args) && !word.is_empty() && IncParser::parse(Rule::keyword, word).is_err() {
        return d.note(format!("`{word}` is not a layer (the layers are {}), so it reads as a block whose arguments go in parentheses", LAYERS.join(", ")));
    }
    d
}

const LAYERS: &[&str] = &["input", "conv", "maxpool", "avgpool", "global avgpool", "global maxpool", "dropout", "fc", "flatten", "softmax", "relu"];

/// The closing brackets that the grammar accepts at `pos`, which pest leaves out of its list (it
/// names rules, not literal tokens): those with which the parser gets past `pos`. None after a
/// comment on the same line, which would swallow the bracket.
fn closers(text: &str, pos: usize) -> Vec<&'static str> {
    let line = &text[text[..pos].rfind('\n').map_or(0, |i| i + 1)..pos];
    if line.contains("//") || line.contains("/*") {
        return vec![];
    }
    ["`}`", "`)`"]
        .into_iter()
        .filter(|c| {
            let patched = format!("{}{}{}", &text[..pos], &c[1..2], &text[pos..]);
            match IncParser::parse(Rule::file, &patched) {
                Ok(_) => true,
                Err(e) => matches!(e.location, InputLocation::Pos(p) | InputLocation::Span((p, _)) if p > pos),
            }
        })
        .collect()
}

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::file
        | Rule::item
        | Rule::import
        | Rule::defaults
        | Rule::block_def
        | Rule::network_def
        | Rule::kw_import
        | Rule::kw_defaults
        | Rule::kw_block
        | Rule::kw_network => "`import`, `defaults`, `block` or `network`",
        Rule::ident | Rule::label | Rule::word | Rule::arg_name => "a name",
        Rule::params | Rule::param => "a parameter list `(name: type = default, ...)`",
        Rule::type_name => "a type (int, float, bool or str)",
        Rule::body | Rule::branches => "`{`",
        Rule::stmt
        | Rule::element
        | Rule::primary
        | Rule::layer
        | Rule::layer_kind
        | Rule::call
        | Rule::concat
        | Rule::residual
        | Rule::repeat
        | Rule::group
        | Rule::kw_concat
        | Rule::kw_residual
        | Rule::kw_repeat
        | Rule::kw_conv
        | Rule::kw_maxpool
        | Rule::kw_avgpool
        | Rule::kw_global
        | Rule::kw_dropout
        | Rule::kw_fc
        | Rule::kw_flatten
        | Rule::kw_softmax
        | Rule::kw_relu
        | Rule::kw_input
        | Rule::global_pool
        | Rule::inline
        | Rule::kw_inline => "a layer, a block call, `concat`, `residual` or `repeat`",
        Rule::dims => "sizes such as `3x3`",
        Rule::option | Rule::opt_stride | Rule::opt_pad | Rule::opt_bn | Rule::flag | Rule::kw_stride | Rule::kw_pad | Rule::kw_bn => {
            "a layer option (stride, pad, valid, same, bias, nobias, bn, nobn, relu, linear, include_pad, exclude_pad)"
        }
        Rule::args | Rule::arg => "arguments `(name = value, ...)`",
        Rule::expr | Rule::term | Rule::unary | Rule::atom | Rule::int | Rule::float | Rule::boolean | Rule::var | Rule::neg | Rule::pair | Rule::tuple => {
            "a value"
        }
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::string | Rule::string_text => "a string in double quotes",
        Rule::default_rule => "a default rule `layer: option, ...`",
        Rule::keyword => "a keyword",
        _ => "something else",
    }
}

struct Cx {
    file: FileId,
}

impl Cx {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, s.start(), s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident { name: p.as_str().to_string(), span: self.span(&p) }
    }

    fn item(&self, p: Pair<Rule>) -> Item {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::import => {
                let s = p.into_inner().nth(1).expect("import has a string");
                Item::Import { path: s.into_inner().next().map_or(String::new(), |t| t.as_str().to_string()), span }
            }
            Rule::defaults => Item::Defaults(p.into_inner().skip(1).map(|r| self.default_rule(r)).collect()),
            Rule::block_def => Item::Block(self.def(p)),
            Rule::network_def => Item::Network(self.def(p)),
            r => unreachable!("item rule {r:?}"),
        }
    }

    fn default_rule(&self, p: Pair<Rule>) -> DefaultRule {
        let mut it = p.into_inner();
        let kind_pair = it.next().expect("default rule has a layer kind");
        let kind_span = self.span(&kind_pair);
        DefaultRule { kind: layer_kind(kind_pair), kind_span, options: it.map(|o| self.option(o)).collect() }
    }

    fn def(&self, p: Pair<Rule>) -> Def {
        let span = self.span(&p);
        let mut it = p.into_inner().skip(1);
        let name = self.ident(it.next().expect("definition has a name"));
        let mut params = vec![];
        let mut body = vec![];
        for part in it {
            match part.as_rule() {
                Rule::params => params = part.into_inner().map(|q| self.param(q)).collect(),
                Rule::body => body = self.stmts(part),
                r => unreachable!("definition part {r:?}"),
            }
        }
        Def { name, params, body, span }
    }

    fn param(&self, p: Pair<Rule>) -> Param {
        let mut it = p.into_inner();
        let name = self.ident(it.next().expect("param name"));
        let ty_pair = it.next().expect("param type");
        let ty = match ty_pair.as_str() {
            "int" => Type::Int,
            "float" => Type::Float,
            "bool" => Type::Bool,
            _ => Type::Str,
        };
        Param { name, ty, ty_span: self.span(&ty_pair), default: it.next().map(|e| self.expr(e)) }
    }

    fn stmts(&self, p: Pair<Rule>) -> Vec<Stmt> {
        p.into_inner().map(|s| self.stmt(s)).collect()
    }

    fn stmt(&self, p: Pair<Rule>) -> Stmt {
        let span = self.span(&p);
        let mut label = None;
        let mut elements = vec![];
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::label => label = Some(self.ident(part.into_inner().next().expect("label ident"))),
                Rule::element => elements.push(self.element(part)),
                _ => elements.push(self.primary(part, None)),
            }
        }
        Stmt { label, elements, span }
    }

    fn element(&self, p: Pair<Rule>) -> Element {
        let mut it = p.into_inner();
        let first = it.next().expect("element has content");
        if first.as_rule() == Rule::label {
            let label = self.ident(first.into_inner().next().expect("label ident"));
            self.primary(it.next().expect("labelled element has content"), Some(label))
        } else {
            self.primary(first, None)
        }
    }

    fn primary(&self, p: Pair<Rule>, label: Option<Ident>) -> Element {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::layer => ElementKind::Layer(self.layer(p)),
            Rule::call => {
                let mut it = p.into_inner().peekable();
                let inline = it.next_if(|q| q.as_rule() == Rule::inline).is_some();
                let block = self.ident(it.next().expect("call name"));
                ElementKind::Call { block, args: it.next().map(|a| self.args(a)).unwrap_or_default(), inline }
            }
            Rule::concat => ElementKind::Concat { branches: self.stmts(p.into_inner().nth(1).expect("concat branches")) },
            Rule::residual => {
                let mut args = vec![];
                let mut branches = vec![];
                for part in p.into_inner().skip(1) {
                    match part.as_rule() {
                        Rule::args => args = self.args(part),
                        _ => branches = self.stmts(part),
                    }
                }
                ElementKind::Residual { args, branches }
            }
            Rule::repeat => {
                let mut it = p.into_inner().skip(1);
                let count = self.expr(it.next().expect("repeat count"));
                ElementKind::Repeat { count, body: self.stmts(it.next().expect("repeat body")) }
            }
            Rule::group => ElementKind::Group(Box::new(self.stmt(p.into_inner().next().expect("group stmt")))),
            r => unreachable!("primary rule {r:?}"),
        };
        let span = label.as_ref().map_or(span, |l| l.span.to(span));
        Element { label, kind, span }
    }

    fn args(&self, p: Pair<Rule>) -> Vec<Arg> {
        p.into_inner()
            .map(|a| {
                let span = self.span(&a);
                let mut it = a.into_inner();
                let first = it.next().expect("arg content");
                if first.as_rule() == Rule::arg_name {
                    let name = self.ident(first.into_inner().next().expect("arg name ident"));
                    Arg { name: Some(name), value: self.expr(it.next().expect("arg value")), span }
                } else {
                    Arg { name: None, value: self.expr(first), span }
                }
            })
            .collect()
    }

    fn layer(&self, p: Pair<Rule>) -> Layer {
        let mut it = p.into_inner();
        let kind_pair = it.next().expect("layer kind");
        let kind_span = self.span(&kind_pair);
        let mut layer = Layer { kind: layer_kind(kind_pair), kind_span, dims: None, value: None, options: vec![] };
        for part in it {
            match part.as_rule() {
                Rule::dims => {
                    let dims = part.as_str().split('x').map(|d| d.parse().unwrap_or(u64::MAX)).collect();
                    layer.dims = Some((dims, self.span(&part)));
                }
                Rule::expr => layer.value = Some(self.expr(part)),
                Rule::option => layer.options.push(self.option(part)),
                r => unreachable!("layer part {r:?}"),
            }
        }
        layer
    }

    fn option(&self, p: Pair<Rule>) -> LayerOption {
        let span = self.span(&p);
        let inner = p.into_inner().next().expect("option content");
        let kind = match inner.as_rule() {
            Rule::opt_stride => OptionKind::Stride(self.pair(inner.into_inner().nth(1).expect("stride value"))),
            Rule::opt_pad => OptionKind::Pad(self.pair(inner.into_inner().nth(1).expect("pad value"))),
            Rule::opt_bn => OptionKind::Bn(inner.into_inner().nth(1).map(|a| self.args(a)).unwrap_or_default()),
            Rule::flag => OptionKind::Flag(match inner.as_str() {
                "valid" => Flag::Valid,
                "same" => Flag::Same,
                "bias" => Flag::Bias,
                "nobias" => Flag::NoBias,
                "nobn" => Flag::NoBn,
                "relu" => Flag::Relu,
                "linear" => Flag::Linear,
                "include_pad" => Flag::IncludePad,
                _ => Flag::ExcludePad,
            }),
            r => unreachable!("option rule {r:?}"),
        };
        LayerOption { kind, span }
    }

    fn pair(&self, p: Pair<Rule>) -> Vec<Expr> {
        let inner = p.into_inner().next().expect("pair content");
        if inner.as_rule() == Rule::tuple {
            inner.into_inner().map(|e| self.expr(e)).collect()
        } else {
            vec![self.atom(inner)]
        }
    }

    fn expr(&self, p: Pair<Rule>) -> Expr {
        debug_assert_eq!(p.as_rule(), Rule::expr);
        let mut it = p.into_inner();
        let mut lhs = self.term(it.next().expect("expr term"));
        while let Some(op) = it.next() {
            let rhs = self.term(it.next().expect("expr rhs"));
            let op = if op.as_str() == "+" { BinOp::Add } else { BinOp::Sub };
            lhs = binary(op, lhs, rhs);
        }
        lhs
    }

    fn term(&self, p: Pair<Rule>) -> Expr {
        let mut it = p.into_inner();
        let mut lhs = self.unary(it.next().expect("term unary"));
        while let Some(op) = it.next() {
            let rhs = self.unary(it.next().expect("term rhs"));
            let op = match op.as_str() {
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                _ => BinOp::Rem,
            };
            lhs = binary(op, lhs, rhs);
        }
        lhs
    }

    fn unary(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let parts: Vec<Pair<Rule>> = p.into_inner().collect();
        let (negs, atom) = parts.split_at(parts.len() - 1);
        let mut e = self.atom(atom[0].clone());
        for _ in negs {
            e = Expr { kind: ExprKind::Neg(Box::new(e)), span };
        }
        e
    }

    fn atom(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::int => match p.as_str().parse() {
                Ok(v) => ExprKind::Int(v),
                Err(_) => ExprKind::Float(f64::INFINITY),
            },
            Rule::float => ExprKind::Float(p.as_str().parse().unwrap_or(f64::NAN)),
            Rule::boolean => ExprKind::Bool(p.as_str() == "true"),
            Rule::string => ExprKind::Str(p.into_inner().next().map_or(String::new(), |s| s.as_str().to_string())),
            Rule::var => ExprKind::Var(p.as_str().to_string()),
            Rule::expr => return self.expr(p),
            r => unreachable!("atom rule {r:?}"),
        };
        Expr { kind, span }
    }
}

fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
    let span = lhs.span.to(rhs.span);
    Expr { kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span }
}

fn layer_kind(p: Pair<Rule>) -> LayerKind {
    let inner = p.into_inner().next().expect("layer kind keyword");
    match inner.as_rule() {
        Rule::global_pool => {
            if inner.as_str().ends_with("avgpool") {
                LayerKind::GlobalAvgPool
            } else {
                LayerKind::GlobalMaxPool
            }
        }
        Rule::kw_conv => LayerKind::Conv,
        Rule::kw_maxpool => LayerKind::MaxPool,
        Rule::kw_avgpool => LayerKind::AvgPool,
        Rule::kw_dropout => LayerKind::Dropout,
        Rule::kw_fc => LayerKind::Fc,
        Rule::kw_flatten => LayerKind::Flatten,
        Rule::kw_softmax => LayerKind::Softmax,
        Rule::kw_relu => LayerKind::Relu,
        _ => LayerKind::Input,
    }
}
