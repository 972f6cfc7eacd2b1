//! The pass pipeline. Each pass takes the graph from the previous one; `incc graph --after PASS`
//! stops after any of them. Passes that a compilation does not ask for are skipped.

pub mod fold_bn;
pub mod residual;
pub mod shapes;

use crate::diag::{Diagnostic, Diagnostics};
use crate::ir::Graph;
pub use residual::ResidualizeSpec;

/// Everything the passes may be asked to do.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    pub residualize: Option<ResidualizeSpec>,
    pub fold_bn: bool,
}

/// The passes, in order, with what each does (shown by `incc graph --list-passes` and in errors).
pub const PASSES: &[(&str, &str)] = &[
    ("elaborate", "the graph as written: blocks expanded, names given (no shapes yet)"),
    ("infer-shapes", "every node's output shape"),
    ("residualize", "with --residualize: mark each eligible block's concat for the residual rewrite"),
    ("residual-rewrite", "each marked concat -> 1x1 linear conv, scale, sum with the block input [, relu]"),
    ("fold-bn", "with --fold-bn: each conv -> batchnorm becomes one conv with a bias (weights folded alike)"),
];

pub fn check_pass_name(name: &str) -> Result<(), String> {
    if PASSES.iter().any(|(p, _)| *p == name) {
        Ok(())
    } else {
        let names: Vec<&str> = PASSES.iter().map(|(p, _)| *p).collect();
        Err(format!("unknown pass `{name}`; the passes are: {}", names.join(", ")))
    }
}

/// What the passes produced besides the graph.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Blocks `--residualize` left as they are, with the reason.
    pub warnings: Vec<Diagnostic>,
    /// The batch norms folded into convs, for the weights to follow (`fold_bn::fold_weights`).
    pub folds: Vec<fold_bn::Fold>,
}

/// Runs the pipeline after elaboration, stopping after `stop_after` if given.
pub fn run(mut graph: Graph, options: &PassOptions, stop_after: Option<&str>) -> Result<(Graph, PassReport), Diagnostics> {
    let mut warnings = vec![];
    let mut folds = vec![];
    for (pass, _) in PASSES {
        if stop_after == Some("elaborate") {
            break;
        }
        match *pass {
            "elaborate" => continue,
            "infer-shapes" => shapes::infer_shapes(&mut graph)?,
            "residualize" => {
                if let Some(spec) = &options.residualize {
                    warnings.extend(residual::residualize(&mut graph, spec)?);
                }
            }
            "residual-rewrite" => residual::rewrite_residuals(&mut graph)?,
            "fold-bn" => {
                if options.fold_bn {
                    folds = fold_bn::fold_graph(&mut graph);
                }
            }
            other => unreachable!("pass {other} has no implementation"),
        }
        if stop_after == Some(*pass) {
            break;
        }
    }
    Ok((graph, PassReport { warnings, folds }))
}
