//! Batch-norm folding (inference): conv -> batchnorm  =>  conv with bias.
//!   W' = W * s,  b' = (b - mean) * s + beta,  s = gamma / sqrt(var + eps)   (per output channel)
//! The IR side (`fold_graph`) needs no values; the value side (`fold_weights`) applies the same
//! list of folds to the weights, so a checkpoint of the unfolded network folds with its graph.

use crate::ir::ops::Op;
use crate::ir::Graph;
use crate::weights::{Tensor, Weights};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Fold {
    pub conv: String,
    pub bn: String,
    pub eps: f64,
    pub conv_had_bias: bool,
}

/// Folds every batch norm that directly follows a conv read by nothing else.
pub fn fold_graph(graph: &mut Graph) -> Vec<Fold> {
    let mut folds = vec![];
    let mut replaced = HashMap::new();
    for bn in graph.order() {
        let Op::BatchNorm(norm) = &graph.node(bn).op else { continue };
        let eps = norm.eps;
        let conv = graph.inputs(bn)[0];
        if graph.users(conv).len() != 1 {
            continue;
        }
        let (conv_name, bn_name) = (graph.g[conv].name.clone(), graph.g[bn].name.clone());
        let Op::Conv(c) = &mut graph.g[conv].op else { continue };
        folds.push(Fold { conv: conv_name, bn: bn_name, eps, conv_had_bias: c.bias });
        c.bias = true;
        graph.replace_uses(bn, conv);
        replaced.insert(bn, conv);
        graph.g.remove_node(bn);
    }
    graph.replace_ends(&replaced);
    folds
}

/// Applies `folds` to weights of the unfolded graph.
pub fn fold_weights(weights: &mut Weights, folds: &[Fold]) -> Result<(), String> {
    for f in folds {
        let mut take = |suffix: &str| {
            let name = format!("{}.{suffix}", f.bn);
            weights.tensors.remove(&name).ok_or_else(|| format!("batch-norm folding needs `{name}`"))
        };
        let (gamma, beta, mean, var) = (take("weight")?, take("bias")?, take("running_mean")?, take("running_var")?);
        let weight_name = format!("{}.weight", f.conv);
        let weight = weights.tensors.get_mut(&weight_name).ok_or_else(|| format!("batch-norm folding needs `{weight_name}`"))?;
        let out = weight.shape[0];
        let per_out = weight.data.len() / out;
        let scale: Vec<f64> = (0..out).map(|o| f64::from(gamma.data[o]) / (f64::from(var.data[o]) + f.eps).sqrt()).collect();
        for (o, chunk) in weight.data.chunks_mut(per_out).enumerate() {
            for w in chunk {
                *w = (f64::from(*w) * scale[o]) as f32;
            }
        }
        let bias_name = format!("{}.bias", f.conv);
        let old_bias = if f.conv_had_bias { weights.tensors.remove(&bias_name).map(|t| t.data) } else { None };
        let bias = (0..out)
            .map(|o| {
                let b = old_bias.as_ref().map_or(0.0, |b| f64::from(b[o]));
                ((b - f64::from(mean.data[o])) * scale[o] + f64::from(beta.data[o])) as f32
            })
            .collect();
        weights.tensors.insert(bias_name, Tensor { shape: vec![out], data: bias });
    }
    Ok(())
}
