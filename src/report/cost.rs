//! `incc flops`: parameters, multiply-adds and activations per layer (or per block at a depth),
//! with totals, under a named counting convention.

use crate::ir::ops::Op;
use crate::ir::{FrameId, FrameKind, Graph};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// Conv and fully-connected multiply-adds, bias excluded.
    Incc,
    /// fvcore (and timm's published GMACs): incc's count plus 2 per batch-norm output element and
    /// 1 per input element of a global average pool.
    Fvcore,
}

impl Convention {
    pub fn describe(self) -> &'static str {
        match self {
            Convention::Incc => "incc: multiply-adds of conv and fully-connected layers, bias excluded; other ops count 0",
            Convention::Fvcore => {
                "fvcore: conv and fully-connected multiply-adds (bias excluded) + 2 per batch-norm output element + 1 per global-average-pool input element"
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub op: String,
    pub output: String,
    pub params: u64,
    pub macs: u64,
    pub activations: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// Trainable parameters (batch-norm scale and shift included, running statistics not).
    pub params: u64,
    pub params_without_bn: u64,
    /// Running statistics.
    pub buffers: u64,
    pub conv_layers: u64,
    /// Under the report's convention, for the whole batch.
    pub macs: u64,
    pub flops: u64,
    /// Conv + fc multiply-adds (incc convention), for the whole batch.
    pub conv_fc_macs: u64,
    /// fvcore's total, for the whole batch.
    pub fvcore: u64,
    pub activations: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub network: String,
    pub input: String,
    pub batch: u64,
    pub convention: Convention,
    pub convention_text: &'static str,
    /// Whether the figures are of a training step (forward + backward).
    pub train: bool,
    pub depth: Option<usize>,
    pub rows: Vec<Row>,
    pub totals: Totals,
}

/// Builds the report. `depth` None: one row per source layer; Some(d): rows for the frames d levels
/// down (top-level elements at 1), deeper frames folded into them.
pub fn report(graph: &Graph, convention: Convention, depth: Option<usize>, batch: u64) -> Report {
    report_with(graph, convention, depth, batch, false)
}

/// As `report`; with `train`, the multiply-adds of a whole training step: forward plus backward
/// (each op's `backward_macs`; the image input needs no gradient).
pub fn report_with(graph: &Graph, convention: Convention, depth: Option<usize>, batch: u64, train: bool) -> Report {
    let mut rows: Vec<Row> = vec![];
    let mut row_of: HashMap<FrameId, usize> = HashMap::new();
    let mut totals = Totals { params: 0, params_without_bn: 0, buffers: 0, conv_layers: 0, macs: 0, flops: 0, conv_fc_macs: 0, fvcore: 0, activations: 0 };
    for n in graph.order() {
        let node = graph.node(n);
        let chain = graph.frame_chain(node.frame);
        let key = match depth {
            Some(d) if d >= 1 && d <= chain.len() => chain[d - 1],
            _ => *chain.last().expect("a node has a frame"),
        };
        let idx = *row_of.entry(key).or_insert_with(|| {
            rows.push(Row { name: graph.frame(key).path.clone(), op: frame_op(graph, key), output: String::new(), params: 0, macs: 0, activations: 0 });
            rows.len() - 1
        });
        let shapes = graph.input_shapes(n);
        let out = graph.shape(n);
        let mut cost = node.op.rule().cost(&shapes, out);
        if train {
            let input_grad = graph.inputs(n).iter().all(|&i| i != graph.input);
            let backward = node.op.rule().backward_macs(&shapes, out, input_grad);
            cost.macs += backward;
            cost.fvcore += backward;
        }
        let params: u64 = graph.params(n).iter().filter(|(_, p)| p.role.is_trainable()).map(|(_, p)| p.shape.iter().map(|&d| d as u64).product::<u64>()).sum();
        let buffers: u64 =
            graph.params(n).iter().filter(|(_, p)| !p.role.is_trainable()).map(|(_, p)| p.shape.iter().map(|&d| d as u64).product::<u64>()).sum();
        let row = &mut rows[idx];
        row.params += params;
        let counted = match convention {
            Convention::Incc => cost.macs,
            Convention::Fvcore => cost.fvcore,
        };
        row.macs += counted * batch;
        row.activations += cost.activations * batch;
        row.output = out.to_string();
        totals.params += params;
        totals.buffers += buffers;
        if !matches!(node.op, Op::BatchNorm(_)) {
            totals.params_without_bn += params;
        }
        if matches!(node.op, Op::Conv(_)) {
            totals.conv_layers += 1;
        }
        totals.macs += counted * batch;
        totals.conv_fc_macs += cost.macs * batch;
        totals.fvcore += cost.fvcore * batch;
        totals.activations += cost.activations * batch;
    }
    // A block's output is its last node, which the depth-first order may not visit last.
    for (frame, &idx) in &row_of {
        if let Some((_, out)) = graph.frame(*frame).io {
            rows[idx].output = graph.shape(out).to_string();
        }
    }
    totals.flops = 2 * totals.macs;
    Report {
        network: graph.name.clone(),
        input: graph.shape(graph.input).to_string(),
        batch,
        convention,
        convention_text: convention.describe(),
        train,
        depth,
        rows,
        totals,
    }
}

fn frame_op(graph: &Graph, f: FrameId) -> String {
    let frame = graph.frame(f);
    match &frame.kind {
        FrameKind::Block { block } => block.clone(),
        FrameKind::Repeat { count } => {
            let body = graph
                .frames
                .iter()
                .find(|c| c.parent == Some(f))
                .map(|c| match &c.kind {
                    FrameKind::Block { block } => block.clone(),
                    _ => "layers".to_string(),
                })
                .unwrap_or_default();
            format!("{count} x {body}")
        }
        FrameKind::Layer => {
            let ops: Vec<String> = graph
                .g
                .node_indices()
                .filter(|&n| graph.node(n).frame == f)
                .enumerate()
                .map(|(i, n)| {
                    // The layer's main op in full; what follows it (batch norm, relu) by kind.
                    let rule = graph.node(n).op.rule();
                    let d = rule.describe();
                    if i > 0 || d.is_empty() {
                        rule.kind().to_string()
                    } else {
                        format!("{} {d}", rule.kind())
                    }
                })
                .collect();
            ops.join(" + ")
        }
    }
}

/// 12,253,974,624
pub fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 12.25 G
fn human(v: u64) -> String {
    let v = v as f64;
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} k", v / 1e3)
    } else {
        format!("{v}")
    }
}

pub fn render_table(r: &Report, source: &str) -> String {
    use comfy_table::{presets, CellAlignment, Table};
    let mut table = Table::new();
    table.load_style(presets::ASCII_MARKDOWN);
    table.set_header(vec!["name", "op", "output", "params", "MACs", "activations"]);
    for row in &r.rows {
        table.add_row(vec![row.name.clone(), row.op.clone(), row.output.clone(), thousands(row.params), thousands(row.macs), thousands(row.activations)]);
    }
    for col in 3..6 {
        if let Some(c) = table.column_mut(col) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let t = &r.totals;
    let step = if r.train { "; a training step: forward + backward (dX and dW of conv and fc)" } else { "" };
    let mut out = format!("network {} ({source}), input N x {}, batch {}\nconvention: {}{step}\n\n{table}\n\n", r.network, r.input, r.batch, r.convention_text);
    let lines = [
        (
            "parameters",
            format!("{} ({} without batch norm; {} running statistics besides)", thousands(t.params), thousands(t.params_without_bn), thousands(t.buffers)),
        ),
        ("conv layers", t.conv_layers.to_string()),
        (
            "multiply-adds",
            format!(
                "{} ({}MACs, {} convention)",
                thousands(t.macs),
                human(t.macs),
                match r.convention {
                    Convention::Incc => "incc",
                    Convention::Fvcore => "fvcore",
                }
            ),
        ),
        ("FLOPs (2 x MACs)", format!("{} ({}FLOPs)", thousands(t.flops), human(t.flops))),
        ("conv + fc MACs", thousands(t.conv_fc_macs)),
        ("fvcore total", thousands(t.fvcore)),
        ("activations", thousands(t.activations)),
    ];
    for (k, v) in lines {
        out.push_str(&format!("{k:<18} {v}\n"));
    }
    out
}
