//! Values and expressions over block parameters, and binding call arguments to parameters.

use crate::diag::Diagnostic;
use crate::front::ast::{Arg, BinOp, Expr, ExprKind, Param, Type};
use crate::source::Span;
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl Value {
    pub fn ty(&self) -> Type {
        match self {
            Value::Int(_) => Type::Int,
            Value::Float(_) => Type::Float,
            Value::Bool(_) => Type::Bool,
            Value::Str(_) => Type::Str,
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.ty().keyword()
    }

    /// Converts to a parameter's type; an int widens to float, nothing else converts.
    pub fn coerce(self, ty: Type) -> Result<Value, Value> {
        match (self, ty) {
            (v @ Value::Int(_), Type::Int) => Ok(v),
            (Value::Int(i), Type::Float) => Ok(Value::Float(i as f64)),
            (v @ Value::Float(_), Type::Float) => Ok(v),
            (v @ Value::Bool(_), Type::Bool) => Ok(v),
            (v @ Value::Str(_), Type::Str) => Ok(v),
            (v, _) => Err(v),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&crate::ir::ops::fmt_float(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

pub type Env = HashMap<String, Value>;

pub fn eval(e: &Expr, env: &Env) -> Result<Value, Diagnostic> {
    Ok(match &e.kind {
        ExprKind::Int(i) => Value::Int(*i),
        ExprKind::Float(x) if !x.is_finite() => {
            return Err(Diagnostic::error("number out of range").at(e.span, "too large"));
        }
        ExprKind::Float(x) => Value::Float(*x),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Str(s) => Value::Str(s.clone()),
        ExprKind::Var(name) => match env.get(name) {
            Some(v) => v.clone(),
            None => {
                let mut known: Vec<&str> = env.keys().map(String::as_str).collect();
                known.sort();
                let d = Diagnostic::error(format!("unknown parameter `{name}`")).at(e.span, "not a parameter of this block");
                return Err(if known.is_empty() {
                    d.note("this block has no parameters")
                } else {
                    d.note(format!("parameters in scope: {}", known.join(", ")))
                });
            }
        },
        ExprKind::Neg(inner) => match eval(inner, env)? {
            // -i64::MIN does not fit.
            Value::Int(i) => Value::Int(i.checked_neg().ok_or_else(|| overflow(e.span))?),
            Value::Float(x) => Value::Float(-x),
            v => return Err(type_error(e.span, "a number", &v)),
        },
        ExprKind::Binary(op, a, b) => binary(*op, eval(a, env)?, eval(b, env)?, e.span)?,
    })
}

fn binary(op: BinOp, a: Value, b: Value, span: Span) -> Result<Value, Diagnostic> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            if matches!(op, BinOp::Div | BinOp::Rem) && y == 0 {
                return Err(Diagnostic::error("division by zero").at(span, "the divisor is 0"));
            }
            let int = |v: Option<i64>| v.map(Value::Int).ok_or_else(|| overflow(span));
            match op {
                BinOp::Add => int(x.checked_add(y)),
                BinOp::Sub => int(x.checked_sub(y)),
                BinOp::Mul => int(x.checked_mul(y)),
                // Exact division stays an int (`w / 2` for a width); otherwise it is a float.
                // `checked_rem` fails only for i64::MIN / -1, whose quotient does not fit.
                BinOp::Div => match x.checked_rem(y) {
                    Some(0) | None => int(x.checked_div(y)),
                    Some(_) => Ok(Value::Float(x as f64 / y as f64)),
                },
                // Any integer modulo -1 is 0 (`rem_euclid` would overflow computing i64::MIN % -1).
                BinOp::Rem if y == -1 => Ok(Value::Int(0)),
                BinOp::Rem => Ok(Value::Int(x.rem_euclid(y))),
            }
        }
        (a @ (Value::Int(_) | Value::Float(_)), b @ (Value::Int(_) | Value::Float(_))) => {
            let (x, y) = (as_f64(&a), as_f64(&b));
            if matches!(op, BinOp::Div | BinOp::Rem) && y == 0.0 {
                return Err(Diagnostic::error("division by zero").at(span, "the divisor is 0"));
            }
            let v = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::Rem => x.rem_euclid(y),
            };
            if !v.is_finite() {
                return Err(Diagnostic::error("number out of range").at(span, "this value does not fit in a 64-bit float"));
            }
            Ok(Value::Float(v))
        }
        (Value::Int(_) | Value::Float(_), v) | (v, _) => Err(type_error(span, "numbers", &v)),
    }
}

fn overflow(span: Span) -> Diagnostic {
    Diagnostic::error("integer overflow").at(span, "this value does not fit in 64 bits")
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        _ => f64::NAN,
    }
}

pub fn type_error(span: Span, expected: &str, found: &Value) -> Diagnostic {
    Diagnostic::error(format!("expected {expected}, found {} `{found}`", found.type_name())).at(span, format!("this is {} `{found}`", found.type_name()))
}

/// Evaluates to a positive integer (a width, a kernel, a count).
pub fn eval_positive(e: &Expr, env: &Env, what: &str) -> Result<usize, Diagnostic> {
    match eval(e, env)? {
        Value::Int(i) if i > 0 => Ok(i as usize),
        Value::Int(i) => Err(Diagnostic::error(format!("{what} must be a positive integer, found {i}")).at(e.span, "must be at least 1")),
        v => Err(type_error(e.span, &format!("an integer {what}"), &v)),
    }
}

pub fn eval_nonnegative(e: &Expr, env: &Env, what: &str) -> Result<usize, Diagnostic> {
    match eval(e, env)? {
        Value::Int(i) if i >= 0 => Ok(i as usize),
        Value::Int(i) => Err(Diagnostic::error(format!("{what} must not be negative, found {i}")).at(e.span, "must be 0 or more")),
        v => Err(type_error(e.span, &format!("an integer {what}"), &v)),
    }
}

pub fn eval_float(e: &Expr, env: &Env, what: &str) -> Result<f64, Diagnostic> {
    match eval(e, env)? {
        Value::Int(i) => Ok(i as f64),
        Value::Float(x) => Ok(x),
        v => Err(type_error(e.span, &format!("a number for {what}"), &v)),
    }
}

/// A value for each parameter, from positional then named arguments, then defaults.
/// `defaults_env` evaluates default expressions (the block's own file has no globals, so it is empty).
pub fn bind_args(callee: &str, params: &[Param], args: &[Arg], call_span: Span, caller_env: &Env) -> Result<Env, Diagnostic> {
    let mut env = Env::new();
    let mut positional = true;
    for (i, arg) in args.iter().enumerate() {
        let param = match &arg.name {
            None if !positional => {
                return Err(Diagnostic::error("positional argument after a named one")
                    .at(arg.span, "name this argument")
                    .note("write positional arguments first: `block(1, 2, name = 3)`"));
            }
            None => params.get(i).ok_or_else(|| {
                Diagnostic::error(format!(
                    "`{callee}` takes {} argument{}, but {} were given",
                    params.len(),
                    if params.len() == 1 { "" } else { "s" },
                    args.iter().filter(|a| a.name.is_none()).count()
                ))
                .at(arg.span, "unexpected argument")
            })?,
            Some(name) => {
                positional = false;
                params.iter().find(|p| p.name.name == name.name).ok_or_else(|| {
                    let names: Vec<&str> = params.iter().map(|p| p.name.name.as_str()).collect();
                    let d = Diagnostic::error(format!("`{callee}` has no parameter `{}`", name.name)).at(name.span, "unknown parameter");
                    if names.is_empty() {
                        d.note(format!("`{callee}` takes no parameters"))
                    } else {
                        d.note(format!("parameters of `{callee}`: {}", names.join(", ")))
                    }
                })?
            }
        };
        if env.contains_key(&param.name.name) {
            return Err(Diagnostic::error(format!("parameter `{}` is given twice", param.name.name)).at(arg.span, "given again here"));
        }
        let value = eval(&arg.value, caller_env)?;
        let value = value.coerce(param.ty).map_err(|v| {
            Diagnostic::error(format!(
                "wrong type for parameter `{}` of `{callee}`: expected {}, found {} `{v}`",
                param.name.name,
                param.ty.keyword(),
                v.type_name()
            ))
            .at(arg.value.span, format!("this is {}", v.type_name()))
            .also(param.ty_span, format!("`{}` is declared {} here", param.name.name, param.ty.keyword()))
        })?;
        env.insert(param.name.name.clone(), value);
    }
    fill_defaults(callee, params, &mut env, call_span)?;
    Ok(env)
}

/// Adds the default of every parameter not yet bound; a parameter with no default is an error.
pub fn fill_defaults(callee: &str, params: &[Param], env: &mut Env, call_span: Span) -> Result<(), Diagnostic> {
    let missing: Vec<&Param> = params.iter().filter(|p| !env.contains_key(&p.name.name) && p.default.is_none()).collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|p| format!("`{}: {}`", p.name.name, p.ty.keyword())).collect();
        let mut d = Diagnostic::error(format!("missing argument{} {} for `{callee}`", if names.len() == 1 { "" } else { "s" }, names.join(", ")))
            .at(call_span, "called here");
        for p in missing {
            d = d.also(p.name.span, "declared without a default");
        }
        return Err(d);
    }
    for p in params {
        if env.contains_key(&p.name.name) {
            continue;
        }
        let default = p.default.as_ref().expect("checked above");
        // Defaults may refer to earlier parameters.
        let value = eval(default, env)?.coerce(p.ty).map_err(|v| {
            Diagnostic::error(format!("default of `{}` has the wrong type: expected {}, found {} `{v}`", p.name.name, p.ty.keyword(), v.type_name()))
                .at(default.span, format!("this is {}", v.type_name()))
        })?;
        env.insert(p.name.name.clone(), value);
    }
    Ok(())
}

/// Parses a `--set name=value` string as the parameter's type.
pub fn parse_value(text: &str, ty: Type) -> Option<Value> {
    match ty {
        Type::Int => text.trim().parse().ok().map(Value::Int),
        Type::Float => text.trim().parse().ok().filter(|x: &f64| x.is_finite()).map(Value::Float),
        Type::Bool => text.trim().parse().ok().map(Value::Bool),
        Type::Str => Some(Value::Str(text.to_string())),
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j])).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates.map(|c| (edit_distance(name, c), c)).filter(|(d, c)| *d <= 2.max(name.len().min(c.len()) / 3)).min().map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    fn at() -> Span {
        Span::new(FileId(0), 0, 0)
    }

    fn int(i: i64) -> Expr {
        Expr { kind: ExprKind::Int(i), span: at() }
    }

    fn float(x: f64) -> Expr {
        Expr { kind: ExprKind::Float(x), span: at() }
    }

    fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
        Expr { kind: ExprKind::Binary(op, Box::new(a), Box::new(b)), span: at() }
    }

    fn neg(a: Expr) -> Expr {
        Expr { kind: ExprKind::Neg(Box::new(a)), span: at() }
    }

    /// i64::MIN, which no literal spells (its digits do not fit): -i64::MAX - 1.
    fn min() -> Expr {
        bin(BinOp::Sub, neg(int(i64::MAX)), int(1))
    }

    fn value(e: &Expr) -> Value {
        eval(e, &Env::new()).unwrap_or_else(|d| panic!("error: {d}"))
    }

    fn error(e: &Expr) -> String {
        match eval(e, &Env::new()) {
            Ok(v) => panic!("evaluated to {v}"),
            Err(d) => {
                assert_eq!(d.labels.len(), 1, "located at the expression");
                d.message
            }
        }
    }

    #[test]
    fn integer_overflow_is_an_error() {
        assert_eq!(value(&min()), Value::Int(i64::MIN));
        assert_eq!(error(&bin(BinOp::Add, int(i64::MAX), int(1))), "integer overflow");
        assert_eq!(error(&bin(BinOp::Sub, min(), int(1))), "integer overflow");
        assert_eq!(error(&neg(min())), "integer overflow");
        assert_eq!(error(&bin(BinOp::Mul, int(3_037_000_500), int(3_037_000_500))), "integer overflow");
        assert_eq!(value(&bin(BinOp::Mul, int(3_037_000_499), int(3_037_000_499))), Value::Int(9_223_372_030_926_249_001));
        assert_eq!(error(&bin(BinOp::Mul, min(), int(-1))), "integer overflow");
        // The one quotient of two i64 that does not fit.
        assert_eq!(error(&bin(BinOp::Div, min(), int(-1))), "integer overflow");
        assert_eq!(value(&bin(BinOp::Div, min(), int(1))), Value::Int(i64::MIN));
    }

    #[test]
    fn division_and_remainder() {
        assert_eq!(error(&bin(BinOp::Div, int(8), int(0))), "division by zero");
        assert_eq!(error(&bin(BinOp::Rem, int(8), int(0))), "division by zero");
        assert_eq!(error(&bin(BinOp::Div, float(1.5), int(0))), "division by zero");
        assert_eq!(error(&bin(BinOp::Rem, int(8), float(0.0))), "division by zero");
        assert_eq!(value(&bin(BinOp::Div, int(8), int(2))), Value::Int(4));
        assert_eq!(value(&bin(BinOp::Div, int(7), int(2))), Value::Float(3.5));
        assert_eq!(value(&bin(BinOp::Rem, int(-7), int(3))), Value::Int(2));
        assert_eq!(value(&bin(BinOp::Rem, min(), int(-1))), Value::Int(0));
        assert_eq!(value(&bin(BinOp::Rem, min(), min())), Value::Int(0));
        assert_eq!(value(&bin(BinOp::Rem, int(-1), min())), Value::Int(i64::MAX));
    }

    #[test]
    fn floats_stay_finite() {
        assert_eq!(error(&bin(BinOp::Mul, float(1e308), int(10))), "number out of range");
        assert_eq!(error(&bin(BinOp::Sub, neg(float(1e308)), float(1e308))), "number out of range");
        assert_eq!(error(&bin(BinOp::Div, float(1e308), float(1e-308))), "number out of range");
        assert_eq!(error(&float(f64::INFINITY)), "number out of range");
        assert_eq!(value(&bin(BinOp::Mul, float(1e154), float(1e154))), Value::Float(1e308));
    }

    #[test]
    fn sizes_must_be_positive() {
        let env = Env::new();
        let message = |r: Result<usize, Diagnostic>| r.expect_err("refused").message;
        assert_eq!(message(eval_positive(&int(-3), &env, "number of filters")), "number of filters must be a positive integer, found -3");
        assert_eq!(message(eval_positive(&int(0), &env, "number of filters")), "number of filters must be a positive integer, found 0");
        assert_eq!(message(eval_positive(&min(), &env, "repeat count")), format!("repeat count must be a positive integer, found {}", i64::MIN));
        assert_eq!(message(eval_nonnegative(&int(-1), &env, "padding")), "padding must not be negative, found -1");
        assert_eq!(eval_positive(&int(i64::MAX), &env, "x").ok(), Some(i64::MAX as usize));
        assert_eq!(eval_nonnegative(&int(0), &env, "padding").ok(), Some(0));
    }
}
