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
    let mut names: Vec<String> = positives.iter().map(|r| rule_name(*r)).collect();
    names.sort();
    names.dedup();
    let expected = closers(text, start).into_iter().map(String::from).chain(names).collect::<Vec<_>>().join(", ");
    let d = Diagnostic::error(format!("syntax error: expected {expected}; found {found}")).at(span, format!("expected {expected}"));
    // `pool 3x3`: a name that is not a layer reads as a block call, which then cannot take sizes.
    let word = text[..start].trim_end_matches([' ', '\t']);
    let word = &word[word.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1)..];
    if positives.contains(&Rule::args) && !word.is_empty() && IncParser::parse(Rule::keyword, word).is_err() {
        let layers = LayerKind::keywords().join(", ");
        return d.note(format!("`{word}` is not a layer (the layers are {layers}), so it reads as a block whose arguments go in parentheses"));
    }
    d
}

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

/// What a rule stands for, in an error's "expected ..." list.
fn rule_name(rule: Rule) -> String {
    let name = match rule {
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
        Rule::type_name => return format!("a type ({})", or_list(&Type::keywords())),
        Rule::body | Rule::branches => "`{`",
        Rule::stmt
        | Rule::element
        | Rule::primary
        | Rule::layer
        | Rule::layer_kind
        | Rule::layer_word
        | Rule::pool_word
        | Rule::global_pool
        | Rule::kw_global
        | Rule::call
        | Rule::concat
        | Rule::residual
        | Rule::repeat
        | Rule::group
        | Rule::kw_concat
        | Rule::kw_residual
        | Rule::kw_repeat
        | Rule::inline
        | Rule::kw_inline => "a layer, a block call, `concat`, `residual` or `repeat`",
        Rule::dims => "sizes such as `3x3`",
        Rule::option | Rule::opt_stride | Rule::opt_pad | Rule::opt_bn | Rule::flag | Rule::kw_stride | Rule::kw_pad | Rule::kw_bn => {
            return format!("a layer option ({})", OptionName::keywords().join(", "));
        }
        Rule::args | Rule::arg => "arguments `(name = value, ...)`",
        Rule::expr | Rule::term | Rule::unary | Rule::atom | Rule::int | Rule::float | Rule::boolean | Rule::var | Rule::neg | Rule::pair | Rule::tuple => {
            "a value"
        }
        Rule::add_op | Rule::mul_op => "an operator",
        Rule::string | Rule::string_text => "a string in double quotes",
        Rule::default_rule => "a default rule `layer: option, ...`",
        Rule::colon => "`:`",
        Rule::keyword => "a keyword",
        // Silent rules (`_{ ... }`), which pest never reports; named for completeness.
        Rule::WHITESPACE | Rule::COMMENT => "a space or a comment",
        Rule::nl | Rule::sep => "a new line",
        Rule::ident_char => "a letter, a digit or `_`",
    };
    name.to_string()
}

/// `a, b or c`.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => only.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
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
        DefaultRule { kind: layer_kind(kind_pair), kind_span, options: it.skip(1).map(|o| self.option(o)).collect() }
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
        let ty = from_table(Type::from_keyword, ty_pair.as_str());
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
            Rule::flag => OptionKind::Flag(from_table(OptionName::from_keyword, inner.as_str())),
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
            // `-` looks past spaces for a `>` (an arrow is no minus), which leaves them in the pair.
            lhs = binary(from_table(BinOp::from_keyword, op.as_str().trim_end()), lhs, rhs);
        }
        lhs
    }

    fn term(&self, p: Pair<Rule>) -> Expr {
        let mut it = p.into_inner();
        let mut lhs = self.unary(it.next().expect("term unary"));
        while let Some(op) = it.next() {
            let rhs = self.unary(it.next().expect("term rhs"));
            lhs = binary(from_table(BinOp::from_keyword, op.as_str()), lhs, rhs);
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

/// The layer kind that a `layer_kind` pair spells. `global avgpool` may have any spaces or a comment
/// between its words; the table spells it with one space.
fn layer_kind(p: Pair<Rule>) -> LayerKind {
    let words: Vec<&str> = p.into_inner().flatten().filter(|w| w.clone().into_inner().next().is_none()).map(|w| w.as_str()).collect();
    from_table(LayerKind::from_keyword, &words.join(" "))
}

/// The row of a keyword table that `keyword` names. The grammar spells exactly the tables'
/// keywords (test `the_grammar_spells_the_tables`), so every keyword it accepts has a row.
fn from_table<T>(row: fn(&str) -> Option<T>, keyword: &str) -> T {
    row(keyword).unwrap_or_else(|| unreachable!("the grammar accepts `{keyword}`, which has no row in its keyword table"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Whether `rule` parses all of `text`.
    fn accepts(rule: Rule, text: &str) -> bool {
        IncParser::parse(rule, text).is_ok_and(|pairs| pairs.as_str() == text)
    }

    /// The grammar's double-quoted literals, outside its comments.
    fn grammar_literals() -> BTreeSet<String> {
        let grammar = include_str!("../../grammar/incc.pest");
        let mut literals = BTreeSet::new();
        for line in grammar.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let (mut literal, mut inside, mut escaped) = (String::new(), false, false);
            for c in line.chars() {
                match (inside, escaped, c) {
                    (false, _, '"') => inside = true,
                    (false, _, _) => {}
                    (true, false, '\\') => escaped = true,
                    (true, false, '"') => {
                        literals.insert(std::mem::take(&mut literal));
                        inside = false;
                    }
                    (true, _, c) => {
                        literal.push(c);
                        escaped = false;
                    }
                }
            }
        }
        literals
    }

    fn set<'a>(words: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        words.into_iter().map(String::from).collect()
    }

    /// The candidates that `rule` parses completely.
    fn spelled(rule: Rule, candidates: &BTreeSet<String>) -> BTreeSet<String> {
        candidates.iter().filter(|c| accepts(rule, c)).cloned().collect()
    }

    /// Every word the grammar spells is among its literals, so trying them all (and pairs of them,
    /// for `global avgpool`) finds every keyword a rule accepts, including one a table lacks.
    #[test]
    fn the_grammar_spells_the_tables() {
        let literals = grammar_literals();
        let words: BTreeSet<String> = literals.iter().filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).cloned().collect();
        assert!(words.contains("conv") && words.contains("exclude_pad") && words.contains("network"), "{words:?}");
        let phrases: BTreeSet<String> = words.iter().flat_map(|a| words.iter().map(move |b| format!("{a} {b}"))).chain(words.iter().cloned()).collect();

        assert_eq!(spelled(Rule::layer_kind, &phrases), set(LayerKind::keywords()));
        let options: BTreeSet<String> = words.iter().filter(|w| accepts(Rule::option, w) || accepts(Rule::option, &format!("{w} 1"))).cloned().collect();
        assert_eq!(options, set(OptionName::keywords()));
        assert_eq!(spelled(Rule::flag, &words), set(OptionName::ALL.iter().filter(|o| o.is_flag()).map(|o| o.keyword())));
        assert_eq!(spelled(Rule::type_name, &words), set(Type::keywords()));
        let operators: BTreeSet<String> = spelled(Rule::add_op, &literals).union(&spelled(Rule::mul_op, &literals)).cloned().collect();
        assert_eq!(operators, set(BinOp::keywords()));
    }

    #[test]
    fn lists_read_as_prose() {
        assert_eq!(or_list(&[]), "");
        assert_eq!(or_list(&["int"]), "int");
        assert_eq!(rule_name(Rule::type_name), "a type (int, float, bool or str)");
    }

    #[test]
    fn every_layer_and_option_word_is_a_keyword_and_no_name() {
        let words = LayerKind::keywords().into_iter().chain(OptionName::keywords()).flat_map(|k| k.split(' '));
        for word in words {
            assert!(accepts(Rule::keyword, word), "`{word}` is no keyword");
            assert!(!accepts(Rule::ident, word), "`{word}` is a name");
            assert!(accepts(Rule::label, word), "`{word}` cannot label a layer");
            assert!(accepts(Rule::ident, &format!("{word}_1")), "`{word}_1` is no name");
        }
        // Type names are not reserved: a parameter may be called `str`.
        for ty in Type::keywords() {
            assert!(accepts(Rule::ident, ty), "`{ty}`");
        }
    }

    /// The first layer of `network n { LINE }`.
    fn layer(line: &str) -> Layer {
        let file = parse(FileId(0), &format!("network n {{\n  {line}\n}}\n")).unwrap_or_else(|d| panic!("`{line}`: {d:?}"));
        let Some(Item::Network(def)) = file.items.into_iter().next() else { panic!("`{line}`: no network") };
        let Some(ElementKind::Layer(layer)) = def.body.into_iter().next().and_then(|s| s.elements.into_iter().next()).map(|e| e.kind) else {
            panic!("`{line}` is no layer")
        };
        layer
    }

    #[test]
    fn every_layer_kind_parses_to_its_row() {
        for &kind in LayerKind::ALL {
            assert_eq!(layer(kind.keyword()).kind, kind);
        }
        assert_eq!(layer("global /* spaces and comments */  maxpool").kind, LayerKind::GlobalMaxPool);
    }

    #[test]
    fn every_option_parses_to_its_row() {
        for &option in OptionName::ALL {
            let line = if option.is_flag() || option == OptionName::Bn { format!("conv {}", option.keyword()) } else { format!("conv {} 2", option.keyword()) };
            let options = layer(&line).options;
            assert_eq!(options.iter().map(LayerOption::name).collect::<Vec<_>>(), [option], "`{line}`");
        }
    }

    #[test]
    fn every_type_parses_to_its_row() {
        for &ty in Type::ALL {
            let text = format!("block b(x: {}) {{\n  relu\n}}\n", ty.keyword());
            let file = parse(FileId(0), &text).unwrap_or_else(|d| panic!("{text}: {d:?}"));
            let Some(Item::Block(def)) = file.items.first() else { panic!("{text}: no block") };
            assert_eq!(def.params[0].ty, ty);
        }
    }

    #[test]
    fn every_operator_parses_to_its_row() {
        for &op in BinOp::ALL {
            let line = format!("dropout 1 {} 2", op.keyword());
            let value = layer(&line).value.unwrap_or_else(|| panic!("`{line}` has no value"));
            assert!(matches!(value.kind, ExprKind::Binary(parsed, _, _) if parsed == op), "`{line}`: {value:?}");
        }
    }
}
