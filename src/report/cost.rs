//! `incc flops`: parameters, multiply-adds and activations per layer (or per block at a depth),
//! with totals, under a named counting convention.

use super::params::node_elements;
use crate::diag::{thousands, Diagnostic};
use crate::ir::ops::Op;
use crate::ir::{FrameId, FrameKind, Graph};
use petgraph::stable_graph::NodeIndex;
use serde::Serialize;

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
pub fn report(graph: &Graph, convention: Convention, depth: Option<usize>, batch: u64) -> Result<Report, Diagnostic> {
    report_with(graph, convention, depth, batch, false)
}

/// As `report`; with `train`, the multiply-adds of a whole training step: forward plus backward
/// (each op's `backward_macs`; the image input needs no gradient).
///
/// Linear in the graph's size. Per example no figure can overflow (the bounds of `ir::MAX_*` keep
/// each below 2^63); for a batch, a figure past `u64` is an error at the layer where it crosses.
pub fn report_with(graph: &Graph, convention: Convention, depth: Option<usize>, batch: u64, train: bool) -> Result<Report, Diagnostic> {
    let frames = FrameContents::of(graph);
    let mut rows: Vec<Row> = vec![];
    // Per frame, its row; per row, the last node seen (its output, unless the frame is a block).
    let mut row_of: Vec<Option<usize>> = vec![None; graph.frames.len()];
    let mut last = vec![];
    let mut totals = Totals { params: 0, params_without_bn: 0, buffers: 0, conv_layers: 0, macs: 0, flops: 0, conv_fc_macs: 0, fvcore: 0, activations: 0 };
    for n in graph.order() {
        let node = graph.node(n);
        let key = match depth {
            Some(d) if d >= 1 => {
                let chain = graph.frame_chain(node.frame);
                chain.get(d - 1).copied().unwrap_or(node.frame)
            }
            _ => node.frame,
        };
        let idx = *row_of[key.0].get_or_insert_with(|| {
            rows.push(Row { name: graph.frame(key).path.clone(), op: frames.op(graph, key), output: String::new(), params: 0, macs: 0, activations: 0 });
            last.push(n);
            rows.len() - 1
        });
        last[idx] = n;
        let shapes = graph.input_shapes(n);
        let out = graph.shape(n);
        let mut cost = node.op.rule().cost(&shapes, out);
        if train {
            let input_grad = graph.inputs(n).iter().all(|&i| i != graph.input);
            let backward = node.op.rule().backward_macs(&shapes, out, input_grad);
            cost.macs += backward;
            cost.fvcore += backward;
        }
        let (params, buffers) = node_elements(graph, n, &shapes);
        let counted = match convention {
            Convention::Incc => cost.macs,
            Convention::Fvcore => cost.fvcore,
        };
        let op = &node.op;
        let added = (|| {
            let (counted, activations) = (counted.checked_mul(batch)?, cost.activations.checked_mul(batch)?);
            let row = &mut rows[idx];
            row.params = row.params.checked_add(params)?;
            row.macs = row.macs.checked_add(counted)?;
            row.activations = row.activations.checked_add(activations)?;
            let t = &mut totals;
            t.params = t.params.checked_add(params)?;
            t.buffers = t.buffers.checked_add(buffers)?;
            if !matches!(op, Op::BatchNorm(_)) {
                t.params_without_bn = t.params_without_bn.checked_add(params)?;
            }
            t.conv_layers += u64::from(matches!(op, Op::Conv(_)));
            t.macs = t.macs.checked_add(counted)?;
            t.flops = t.flops.checked_add(counted.checked_mul(2)?)?;
            t.conv_fc_macs = t.conv_fc_macs.checked_add(cost.macs.checked_mul(batch)?)?;
            t.fvcore = t.fvcore.checked_add(cost.fvcore.checked_mul(batch)?)?;
            t.activations = t.activations.checked_add(activations)?;
            Some(())
        })();
        if added.is_none() {
            return Err(Diagnostic::error(format!("the cost of a batch of {batch} does not fit in 64 bits"))
                .at(node.span, format!("the totals pass {} at `{}`", thousands(u64::MAX), node.name))
                .note("the figures are exact 64-bit counts; a smaller batch fits"));
        }
    }
    // A block's output is its last node, which the depth-first order may not visit last.
    for (frame, idx) in row_of.into_iter().enumerate().filter_map(|(f, idx)| Some((f, idx?))) {
        let out = graph.frames[frame].io.map_or(last[idx], |(_, out)| out);
        rows[idx].output = graph.shape(out).to_string();
    }
    Ok(Report {
        network: graph.name.clone(),
        input: graph.shape(graph.input).to_string(),
        batch,
        convention,
        convention_text: convention.describe(),
        train,
        depth,
        rows,
        totals,
    })
}

/// What each frame holds, gathered in one pass so that naming every row's op stays linear.
struct FrameContents {
    /// The nodes of each frame, in node index order.
    nodes: Vec<Vec<NodeIndex>>,
    /// The first frame directly inside each frame.
    first_child: Vec<Option<FrameId>>,
}

impl FrameContents {
    fn of(graph: &Graph) -> FrameContents {
        let mut nodes = vec![vec![]; graph.frames.len()];
        for n in graph.g.node_indices() {
            nodes[graph.node(n).frame.0].push(n);
        }
        let mut first_child = vec![None; graph.frames.len()];
        for (i, f) in graph.frames.iter().enumerate() {
            if let Some(p) = f.parent {
                first_child[p.0].get_or_insert(FrameId(i));
            }
        }
        FrameContents { nodes, first_child }
    }

    fn op(&self, graph: &Graph, f: FrameId) -> String {
        match &graph.frame(f).kind {
            FrameKind::Block { block } => block.clone(),
            FrameKind::Repeat { count } => {
                let body = self.first_child[f.0]
                    .map(|c| match &graph.frame(c).kind {
                        FrameKind::Block { block } => block.clone(),
                        _ => "layers".to_string(),
                    })
                    .unwrap_or_default();
                format!("{count} x {body}")
            }
            FrameKind::Layer => {
                let ops: Vec<String> = self.nodes[f.0]
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| {
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
