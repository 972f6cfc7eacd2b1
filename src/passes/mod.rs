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

/// What the passes produced besides the graph.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Blocks `--residualize` left as they are, with the reason.
    pub warnings: Vec<Diagnostic>,
    /// The batch norms folded into convs, for the weights to follow (`fold_bn::fold_weights`).
    pub folds: Vec<fold_bn::Fold>,
}

pub struct Pass {
    pub name: &'static str,
    pub what: &'static str,
    run: fn(&mut Graph, &PassOptions, &mut PassReport) -> Result<(), Diagnostics>,
}

/// The pipeline, in order (`incc passes`). `elaborate` is the front end's output.
pub const PASSES: &[Pass] = &[
    Pass { name: "elaborate", what: "the graph as written: blocks expanded, names given (no shapes yet)", run: |_, _, _| Ok(()) },
    Pass { name: "infer-shapes", what: "every node's output shape", run: |g, _, _| Ok(shapes::infer_shapes(g)?) },
    Pass {
        name: "residualize",
        what: "with --residualize: mark each eligible block's concat for the residual rewrite",
        run: |g, o, r| {
            if let Some(spec) = &o.residualize {
                r.warnings.extend(residual::residualize(g, spec)?);
            }
            Ok(())
        },
    },
    Pass {
        name: "residual-rewrite",
        what: "each marked concat -> 1x1 linear conv, scale, sum with the block input [, relu]",
        run: |g, _, _| Ok(residual::rewrite_residuals(g)?),
    },
    Pass {
        name: "fold-bn",
        what: "with --fold-bn: each conv -> batchnorm becomes one conv with a bias (weights folded alike)",
        run: |g, o, r| {
            if o.fold_bn {
                r.folds = fold_bn::fold_graph(g);
            }
            Ok(())
        },
    },
];

pub fn check_pass_name(name: &str) -> Result<(), String> {
    if PASSES.iter().any(|p| p.name == name) {
        Ok(())
    } else {
        let names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
        Err(format!("unknown pass `{name}`; the passes are: {}", names.join(", ")))
    }
}

/// Runs the pipeline after elaboration, stopping after `stop_after` if given.
pub fn run(mut graph: Graph, options: &PassOptions, stop_after: Option<&str>) -> Result<(Graph, PassReport), Diagnostics> {
    let mut report = PassReport::default();
    for pass in PASSES {
        (pass.run)(&mut graph, options, &mut report)?;
        if stop_after == Some(pass.name) {
            break;
        }
    }
    Ok((graph, report))
}
