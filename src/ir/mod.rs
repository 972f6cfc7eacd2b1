//! The graph IR: a petgraph `StableDiGraph` of typed ops. Each node keeps the span it came from, its
//! hierarchical name (parameter names derive from it) and, once shape inference ran, its output shape.
//! Edges carry the input slot they feed. `Frame`s record the source structure (layers, block
//! instances, repeats) that cost reports group by and that `graph --format dot` draws as clusters.
//!
//! Invariants: node names are unique; after the `infer-shapes` pass every node has `shape`;
//! `Graph::inputs(n)` is ordered by slot.

pub mod dot;
pub mod lower;
pub mod ops;
pub mod text;

use crate::source::Span;
use ops::Op;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::HashMap;
use std::fmt;

/// The sizes a graph may reach, refused with a located error where they are crossed (nodes by
/// elaboration, tensors and parameters by `infer-shapes`), so that no figure derived from a graph
/// (shapes, parameter counts, costs) overflows and no command allocates absurd amounts. Each is far
/// above the networks in archs/ (at most 822 nodes, 56 M parameters, 1.4 M elements per tensor).
/// Nodes: 1 M, some 1,200x the largest network; about 1 GB of IR at the bound (390 k nodes of
/// convs take 330 MB to check, 500 MB for the cost report).
pub const MAX_NODES: usize = 1_000_000;
/// Elements of one per-example tensor, activation or parameter: 2^31, what 32-bit indices (ONNX
/// Runtime and CUDA kernels) address; 8 GiB as float32.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;
/// Parameters and buffers of a network together: 2^30, 4 GiB as float32 (weights are allocated
/// whole, and training holds several copies). With the tensor bound it keeps every per-example
/// cost below 2^63: multiply-adds <= parameters x output positions <= 2^30 x 2^31.
pub const MAX_PARAMETERS: u64 = 1 << 30;

/// The number of elements of a tensor of `dims`, or `None` past `u64`.
pub fn checked_elements(dims: &[usize]) -> Option<u64> {
    dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64))
}

/// A per-example tensor shape; the batch dimension `N` is symbolic and not stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// Bounded by `MAX_TENSOR_ELEMENTS` once `infer-shapes` ran.
    pub fn numel(&self) -> u64 {
        self.0.iter().map(|&d| d as u64).product()
    }

    /// Channels of a CxHxW feature map (or the width of a flat vector).
    pub fn channels(&self) -> usize {
        self.0[0]
    }

    /// `HxW` of a CxHxW feature map.
    pub fn grid(&self) -> Option<(usize, usize)> {
        (self.0.len() == 3).then(|| (self.0[1], self.0[2]))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&dims.join("x"))
    }
}

/// Why a residual concat exists and how to rewrite it (see `passes::residual`).
#[derive(Clone, Debug, PartialEq)]
pub struct ResidualMark {
    pub scale: f64,
    /// Insert a ReLU after the sum (`--residualize`); the hand-written form writes its own.
    pub activation: bool,
    /// Full name of the 1x1 projection conv, in the block's scope.
    pub projection: String,
    /// The block's input: the tensor every branch starts from and the sum adds back.
    pub input: NodeIndex,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub name: String,
    pub span: Span,
    pub frame: FrameId,
    pub shape: Option<Shape>,
    pub residual: Option<ResidualMark>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameId(pub usize);

#[derive(Clone, Debug, PartialEq)]
pub enum FrameKind {
    /// One source layer: `conv 3x3 32` becomes conv, batch norm and relu nodes in one layer frame.
    Layer,
    /// An instance of a user-defined block.
    Block { block: String },
    /// `repeat N { ... }`.
    Repeat { count: usize },
}

#[derive(Clone, Debug)]
pub struct Frame {
    /// The name path of the instance (`repeat.3`, `features.6-9`).
    pub path: String,
    pub kind: FrameKind,
    pub span: Span,
    pub parent: Option<FrameId>,
    /// For block instances: the node feeding the block and the block's last node.
    pub io: Option<(NodeIndex, NodeIndex)>,
}

/// The name of a node's parameter, buffer or step input: `<node>.<suffix>` (`features.0.conv.weight`,
/// `dropout.mask`).
pub fn param_name(node: &str, suffix: &str) -> String {
    format!("{node}.{suffix}")
}

/// A trainable parameter or a buffer (running statistics) of one node.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// Appended to the node name: `weight`, `bias`, `running_mean`.
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub role: ParamRole,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamRole {
    Weight,
    Bias,
    BnScale,
    BnShift,
    RunningMean,
    RunningVar,
}

impl ParamRole {
    /// Running statistics are state, not parameters (they are not counted and not trained).
    pub fn is_trainable(self) -> bool {
        !matches!(self, ParamRole::RunningMean | ParamRole::RunningVar)
    }
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub g: StableDiGraph<Node, usize>,
    pub frames: Vec<Frame>,
    pub input: NodeIndex,
    pub output: NodeIndex,
}

impl Graph {
    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.g[n]
    }

    /// Inputs of `n`, ordered by slot.
    pub fn inputs(&self, n: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<(usize, NodeIndex)> = self.g.edges_directed(n, Direction::Incoming).map(|e| (*e.weight(), e.source())).collect();
        edges.sort_by_key(|(slot, _)| *slot);
        edges.into_iter().map(|(_, src)| src).collect()
    }

    /// Consumers of `n` with the slot each reads it in.
    pub fn users(&self, n: NodeIndex) -> Vec<(NodeIndex, usize)> {
        let mut users: Vec<(NodeIndex, usize)> = self.g.edges_directed(n, Direction::Outgoing).map(|e| (e.target(), *e.weight())).collect();
        users.sort();
        users
    }

    pub fn shape(&self, n: NodeIndex) -> &Shape {
        self.g[n].shape.as_ref().expect("shape inference has run")
    }

    pub fn input_shapes(&self, n: NodeIndex) -> Vec<&Shape> {
        self.inputs(n).into_iter().map(|i| self.shape(i)).collect()
    }

    /// Parameters and buffers of `n` with their full names, in the order a state dict lists them.
    pub fn params(&self, n: NodeIndex) -> Vec<(String, ParamSpec)> {
        let shapes = self.input_shapes(n);
        let node = &self.g[n];
        node.op.rule().params(&shapes, self.shape(n)).into_iter().map(|p| (param_name(&node.name, p.suffix), p)).collect()
    }

    /// A canonical topological order that depends only on the graph's structure: depth first
    /// from the output, inputs in slot order. Two graphs built in different orders print alike.
    pub fn order(&self) -> Vec<NodeIndex> {
        let mut seen = std::collections::HashSet::new();
        let mut order = Vec::with_capacity(self.g.node_count());
        // Iterative post-order DFS so that deep networks cannot overflow the stack.
        let mut stack = vec![(self.output, false)];
        while let Some((n, expanded)) = stack.pop() {
            if expanded {
                order.push(n);
                continue;
            }
            if !seen.insert(n) {
                continue;
            }
            stack.push((n, true));
            for i in self.inputs(n).into_iter().rev() {
                if !seen.contains(&i) {
                    stack.push((i, false));
                }
            }
        }
        order
    }

    pub fn frame(&self, f: FrameId) -> &Frame {
        &self.frames[f.0]
    }

    /// The frames enclosing `f`, outermost first, `f` last.
    pub fn frame_chain(&self, f: FrameId) -> Vec<FrameId> {
        let mut chain = vec![f];
        while let Some(p) = self.frames[chain.last().expect("non-empty").0].parent {
            chain.push(p);
        }
        chain.reverse();
        chain
    }

    pub fn add_frame(&mut self, frame: Frame) -> FrameId {
        self.frames.push(frame);
        FrameId(self.frames.len() - 1)
    }

    /// Makes the consumers of `old`, and the graph output, read `new` instead. Block ends and
    /// residual marks follow with `replace_ends`, once for a whole rewrite: visiting every frame
    /// and node at each replacement would make rewriting every block quadratic.
    pub fn replace_uses(&mut self, old: NodeIndex, new: NodeIndex) {
        for (user, slot) in self.users(old) {
            if user == new {
                continue;
            }
            let edge = self.g.find_edge(old, user).expect("user edge exists");
            self.g.remove_edge(edge);
            self.g.add_edge(new, user, slot);
        }
        if self.output == old {
            self.output = new;
        }
    }

    /// After `replace_uses`: block inputs and outputs, and residual marks, that name a replaced
    /// node (a key of `replaced`) name its replacement (never itself replaced).
    pub fn replace_ends(&mut self, replaced: &HashMap<NodeIndex, NodeIndex>) {
        if replaced.is_empty() {
            return;
        }
        let by = |n: &mut NodeIndex| {
            if let Some(&new) = replaced.get(n) {
                *n = new;
            }
        };
        for f in &mut self.frames {
            if let Some((i, o)) = &mut f.io {
                by(i);
                by(o);
            }
        }
        for node in self.g.node_weights_mut() {
            if let Some(mark) = &mut node.residual {
                by(&mut mark.input);
            }
        }
    }

    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.g.node_indices().find(|&n| self.g[n].name == name)
    }
}
