//! One source layer -> the IR ops it stands for. `conv 3x3 32` with batch norm and ReLU becomes
//! three nodes (`NAME.conv`, `NAME.bn`, `NAME.relu`), so that parameter names follow the
//! `BasicConv2d` convention of timm and TF-slim ports; a conv without batch norm is the node `NAME`.

use super::eval::{eval_float, eval_nonnegative, eval_positive, Env};
use crate::diag::Diagnostic;
use crate::front::ast::{Expr, Layer, LayerKind, LayerOption, OptionKind, OptionName};
use crate::ir::ops::*;
use crate::source::Span;

/// The nodes of one layer, in order: (name suffix, op). `None` = the layer's own name.
pub type LayerNodes = Vec<(Option<&'static str>, Op)>;

/// Layer settings after applying the file's defaults, then the layer's own options.
#[derive(Default)]
struct Settings {
    stride: Option<[usize; 2]>,
    padding: Option<Padding>,
    bias: Option<bool>,
    bn: Option<BatchNorm>,
    relu: Option<bool>,
    include_pad: Option<bool>,
    /// The layer's own options so far, to catch two that decide one setting (`OptionName::sets`).
    set_by: Vec<(OptionName, Span)>,
}

const DEFAULT_EPS: f64 = 1e-5;
const DEFAULT_MOMENTUM: f64 = 0.1;

/// Checks that `option` applies to `kind` (the options of each kind are in its keyword table).
pub fn check_option(kind: LayerKind, option: &LayerOption) -> Result<(), Diagnostic> {
    let (name, options) = (option.name(), kind.options());
    if options.contains(&name) {
        return Ok(());
    }
    let d = Diagnostic::error(format!("`{}` does not apply to {}", name.keyword(), kind.keyword())).at(option.span, "not an option of this layer");
    Err(if options.is_empty() {
        d.note(format!("{} takes no options", kind.keyword()))
    } else {
        let words: Vec<&str> = options.iter().map(|o| o.keyword()).collect();
        d.note(format!("options of {}: {}", kind.keyword(), words.join(", ")))
    })
}

impl Settings {
    /// The file's defaults for the layer's kind, then the layer's own options.
    fn of(layer: &Layer, defaults: &[LayerOption], env: &Env) -> Result<Settings, Diagnostic> {
        let mut s = Settings::default();
        for o in defaults {
            s.apply(layer.kind, o, env, false)?;
        }
        for o in &layer.options {
            s.apply(layer.kind, o, env, true)?;
        }
        Ok(s)
    }

    fn apply(&mut self, kind: LayerKind, o: &LayerOption, env: &Env, own: bool) -> Result<(), Diagnostic> {
        check_option(kind, o)?;
        match &o.kind {
            OptionKind::Stride(v) => self.stride = Some(pair(v, env, o.span, "stride", true)?),
            OptionKind::Pad(v) => {
                let p = match v.len() {
                    1 => {
                        let p = padding(&v[0], env)?;
                        [p; 4]
                    }
                    2 => {
                        let [h, w] = pair(v, env, o.span, "padding", false)?;
                        [h, w, h, w]
                    }
                    4 => {
                        let mut p = [0; 4];
                        for (i, e) in v.iter().enumerate() {
                            p[i] = padding(e, env)?;
                        }
                        p
                    }
                    n => {
                        return Err(Diagnostic::error(format!("padding takes 1, 2 or 4 values, found {n}"))
                            .at(o.span, "write `pad 1`, `pad (h, w)` or `pad (top, left, bottom, right)`"));
                    }
                };
                self.padding = Some(Padding::Explicit(p));
            }
            OptionKind::Bn(args) => {
                let mut bn = BatchNorm { eps: DEFAULT_EPS, momentum: DEFAULT_MOMENTUM };
                for a in args {
                    let Some(name) = &a.name else {
                        return Err(Diagnostic::error("bn takes named arguments")
                            .at(a.span, "name this argument")
                            .note("write `bn(eps = 0.001, momentum = 0.1)`"));
                    };
                    let v = eval_float(&a.value, env, &name.name)?;
                    match name.name.as_str() {
                        "eps" if v > 0.0 => bn.eps = v,
                        "momentum" if (0.0..=1.0).contains(&v) => bn.momentum = v,
                        "eps" | "momentum" => {
                            return Err(Diagnostic::error(format!("`{}` out of range: {v}", name.name)).at(a.value.span, "eps must be > 0, momentum in [0, 1]"));
                        }
                        other => {
                            return Err(Diagnostic::error(format!("bn has no argument `{other}`"))
                                .at(name.span, "unknown argument")
                                .note("arguments of bn: eps, momentum"));
                        }
                    }
                }
                self.bn = Some(bn);
            }
            OptionKind::Flag(flag) => match flag {
                OptionName::Valid => self.padding = Some(Padding::Valid),
                OptionName::Same => self.padding = Some(Padding::Same),
                OptionName::Bias | OptionName::NoBias => self.bias = Some(*flag == OptionName::Bias),
                OptionName::NoBn => self.bn = None,
                OptionName::Relu | OptionName::Linear => self.relu = Some(*flag == OptionName::Relu),
                OptionName::IncludePad | OptionName::ExcludePad => self.include_pad = Some(*flag == OptionName::IncludePad),
                // The grammar parses these with their values (`OptionKind::Stride`, `Pad`, `Bn`);
                // its flags are the table's options without one (test `the_grammar_spells_the_tables`).
                OptionName::Stride | OptionName::Pad | OptionName::Bn => unreachable!("`{}` parsed as a flag", flag.keyword()),
            },
        }
        if own {
            let name = o.name();
            if let Some((first, span)) = self.set_by.iter().find(|(first, _)| first.sets() == name.sets()) {
                return Err(Diagnostic::error(format!("conflicting options `{}` and `{}`: both set the {}", first.keyword(), name.keyword(), name.sets()))
                    .at(o.span, "second setting")
                    .also(*span, "first setting"));
            }
            self.set_by.push((name, o.span));
        }
        Ok(())
    }
}

/// The largest kernel size and padding: far beyond any network, and small enough that a padded
/// size (input + padding, at most 2^31 + 2^21) cannot overflow.
const MAX_WINDOW: usize = 1 << 20;

fn padding(e: &Expr, env: &Env) -> Result<usize, Diagnostic> {
    let p = eval_nonnegative(e, env, "padding")?;
    if p > MAX_WINDOW {
        return Err(Diagnostic::error(format!("padding must be at most {MAX_WINDOW}, found {p}")).at(e.span, "too large"));
    }
    Ok(p)
}

fn pair(v: &[Expr], env: &Env, span: Span, what: &str, positive: bool) -> Result<[usize; 2], Diagnostic> {
    let one = |e| if positive { eval_positive(e, env, what) } else { padding(e, env) };
    match v {
        [a] => {
            let a = one(a)?;
            Ok([a, a])
        }
        [a, b] => Ok([one(a)?, one(b)?]),
        _ => Err(Diagnostic::error(format!("{what} takes 1 or 2 values, found {}", v.len())).at(span, format!("write `{what} 2` or `{what} (2, 1)`"))),
    }
}

fn kernel(layer: &Layer) -> Result<[usize; 2], Diagnostic> {
    match &layer.dims {
        Some((d, span)) if d.len() == 2 => {
            if d.iter().any(|&k| k == 0 || k > MAX_WINDOW as u64) {
                return Err(Diagnostic::error(format!("kernel sizes must be between 1 and {MAX_WINDOW}, found {}x{}", d[0], d[1])).at(*span, "invalid kernel"));
            }
            Ok([d[0] as usize, d[1] as usize])
        }
        Some((d, span)) => {
            Err(Diagnostic::error(format!("{} needs a kernel HxW, found {} sizes", layer.kind.keyword(), d.len()))
                .at(*span, "write the kernel as `3x3` or `1x7`"))
        }
        None => Err(Diagnostic::error(format!("{} needs a kernel size", layer.kind.keyword())).at(layer.kind_span, "write the kernel after it, as in `3x3`")),
    }
}

fn no_dims(layer: &Layer) -> Result<(), Diagnostic> {
    match &layer.dims {
        Some((_, span)) => Err(Diagnostic::error(format!("{} takes no sizes", layer.kind.keyword())).at(*span, "unexpected")),
        None => Ok(()),
    }
}

fn value<'a>(layer: &'a Layer, what: &str) -> Result<&'a Expr, Diagnostic> {
    layer.value.as_ref().ok_or_else(|| Diagnostic::error(format!("{} needs {what}", layer.kind.keyword())).at(layer.kind_span, format!("{what} missing")))
}

fn no_value(layer: &Layer) -> Result<(), Diagnostic> {
    match &layer.value {
        Some(v) => Err(Diagnostic::error(format!("{} takes no value", layer.kind.keyword())).at(v.span, "unexpected")),
        None => Ok(()),
    }
}

/// How a layer of one kind becomes ops, given its settings.
type Lowering = fn(&Layer, &Settings, &Env) -> Result<LayerNodes, Diagnostic>;

/// Lowers a layer to its ops.
pub fn lower(layer: &Layer, defaults: &[LayerOption], env: &Env) -> Result<LayerNodes, Diagnostic> {
    let lowering: Lowering = match layer.kind {
        // `input` starts a network, which lowers it itself (`Elab::network`); it is no layer of a chain.
        LayerKind::Input => return Err(Diagnostic::error("`input` can only be the first layer of a network").at(layer.kind_span, "not allowed here")),
        LayerKind::Conv => conv,
        LayerKind::MaxPool => |layer, s, _| pool(layer, s, PoolKind::Max),
        LayerKind::AvgPool => |layer, s, _| pool(layer, s, PoolKind::Avg),
        LayerKind::GlobalAvgPool => |layer, _, _| global_pool(layer, PoolKind::Avg),
        LayerKind::GlobalMaxPool => |layer, _, _| global_pool(layer, PoolKind::Max),
        LayerKind::Dropout => dropout,
        LayerKind::Fc => fc,
        LayerKind::Flatten => |layer, _, _| plain(layer, Op::Flatten(Flatten)),
        LayerKind::Softmax => |layer, _, _| plain(layer, Op::Softmax(Softmax)),
        LayerKind::Relu => |layer, _, _| plain(layer, Op::Relu(Relu)),
    };
    lowering(layer, &Settings::of(layer, defaults, env)?, env)
}

/// `NAME.relu` after a conv or fc with `relu`.
fn activation(s: &Settings) -> LayerNodes {
    if s.relu == Some(true) {
        vec![(Some("relu"), Op::Relu(Relu))]
    } else {
        vec![]
    }
}

fn conv(layer: &Layer, s: &Settings, env: &Env) -> Result<LayerNodes, Diagnostic> {
    let kernel = kernel(layer)?;
    let out_channels = eval_positive(value(layer, "a number of filters")?, env, "number of filters")?;
    let conv =
        Conv { out_channels, kernel, stride: s.stride.unwrap_or([1, 1]), padding: s.padding.unwrap_or(Padding::Valid), bias: s.bias.unwrap_or(s.bn.is_none()) };
    let mut nodes = match &s.bn {
        Some(bn) => vec![(Some("conv"), Op::Conv(conv)), (Some("bn"), Op::BatchNorm(bn.clone()))],
        None => vec![(None, Op::Conv(conv))],
    };
    nodes.extend(activation(s));
    Ok(nodes)
}

fn pool(layer: &Layer, s: &Settings, kind: PoolKind) -> Result<LayerNodes, Diagnostic> {
    let kernel = kernel(layer)?;
    no_value(layer)?;
    let pool = Pool {
        kind,
        kernel,
        stride: s.stride.unwrap_or(kernel),
        padding: s.padding.unwrap_or(Padding::Valid),
        count_include_pad: s.include_pad.unwrap_or(true),
    };
    Ok(vec![(None, Op::Pool(pool))])
}

fn global_pool(layer: &Layer, kind: PoolKind) -> Result<LayerNodes, Diagnostic> {
    no_dims(layer)?;
    no_value(layer)?;
    Ok(vec![(None, Op::GlobalPool(GlobalPool { kind }))])
}

fn dropout(layer: &Layer, _: &Settings, env: &Env) -> Result<LayerNodes, Diagnostic> {
    no_dims(layer)?;
    let v = value(layer, "a drop probability")?;
    let p = eval_float(v, env, "the drop probability")?;
    if !(0.0..1.0).contains(&p) {
        return Err(Diagnostic::error(format!("drop probability must be in [0, 1), found {p}"))
            .at(v.span, "out of range")
            .note("dropout takes the probability of dropping (keep 0.8 is `dropout 0.2`)"));
    }
    Ok(vec![(None, Op::Dropout(Dropout { p }))])
}

fn fc(layer: &Layer, s: &Settings, env: &Env) -> Result<LayerNodes, Diagnostic> {
    no_dims(layer)?;
    let out_features = eval_positive(value(layer, "a number of outputs")?, env, "number of outputs")?;
    let mut nodes = vec![(None, Op::Fc(Fc { out_features, bias: s.bias.unwrap_or(true) }))];
    nodes.extend(activation(s));
    Ok(nodes)
}

/// A layer that takes neither sizes nor a value: one op.
fn plain(layer: &Layer, op: Op) -> Result<LayerNodes, Diagnostic> {
    no_dims(layer)?;
    no_value(layer)?;
    Ok(vec![(None, op)])
}
