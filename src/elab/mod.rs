//! Elaboration: AST -> graph IR. Evaluates parameters, expands blocks and repeats, applies each
//! file's `defaults`, and gives every node its hierarchical name.
//!
//! Naming (so that parameter names equal the state-dict keys of the reference implementations):
//! - A block or network body is a *module scope*: a labelled element takes its label; an unlabelled
//!   one takes its kind (`conv`, the block's name, `repeat`), then `kind_1`, `kind_2`, ...
//! - A labelled chain of several elements (`branch1: a -> b`) and a repeat are *indexed scopes*,
//!   like `nn.Sequential`: elements are numbered 0, 1, ... (a labelled element keeps its label).
//!   An unlabelled `repeat` inside an indexed scope splices its copies into that numbering.
//! - `concat` and `residual` are transparent: their branches live in the enclosing scope.

mod eval;
mod layer;

pub use eval::{did_you_mean, parse_value, Value};

use crate::diag::{thousands, Diagnostic, Diagnostics};
use crate::front::ast::*;
use crate::ir::ops::{Concat, Input, Op};
use crate::ir::{checked_elements, Frame, FrameId, FrameKind, Graph, Node, ResidualMark, Shape, MAX_NODES, MAX_TENSOR_ELEMENTS};
use crate::source::{FileId, Span};
use eval::{bind_args, eval, eval_positive, fill_defaults, Env};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use std::collections::HashMap;

/// What the command line may change about a network.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Which network of the root file, when it defines several.
    pub network: Option<String>,
    /// `--set name=value` for the network's parameters.
    pub set: Vec<(String, String)>,
    /// `--input CxHxW` replaces the network's `input` size.
    pub input: Option<Vec<usize>>,
}

/// Name of the projection conv that the residual rewrite adds (timm / TF-slim call it `conv2d`).
pub const DEFAULT_PROJECTION: &str = "conv2d";

pub fn elaborate(files: &[File], settings: &Settings) -> Result<Graph, Diagnostics> {
    let mut blocks: HashMap<&str, &Def> = HashMap::new();
    let mut defaults: HashMap<FileId, HashMap<LayerKind, Vec<LayerOption>>> = HashMap::new();
    let mut block_file: HashMap<&str, FileId> = HashMap::new();
    let mut errors = vec![];
    for file in files {
        for item in &file.items {
            match item {
                Item::Block(def) => {
                    if let Some(prev) = blocks.insert(&def.name.name, def) {
                        errors.push(
                            Diagnostic::error(format!("block `{}` is defined twice", def.name.name))
                                .at(def.name.span, "second definition")
                                .also(prev.name.span, "first definition"),
                        );
                    }
                    block_file.insert(&def.name.name, file.id);
                }
                Item::Defaults(rules) => {
                    let file_defaults = defaults.entry(file.id).or_default();
                    for rule in rules {
                        for o in &rule.options {
                            if let Err(d) = layer::check_option(rule.kind, o) {
                                errors.push(d);
                            }
                        }
                        file_defaults.entry(rule.kind).or_default().extend(rule.options.iter().cloned());
                    }
                }
                Item::Import { .. } | Item::Network(_) => {}
            }
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    let root = files.first().expect("the loader returns the root file first");
    let network = pick_network(root, settings)?;
    let mut elab =
        Elab { blocks, block_file, defaults, g: StableDiGraph::new(), frames: vec![], names: HashMap::new(), calls: vec![], depth: 0, repeats: vec![] };
    let (input, output) = elab.network(network, root.id, settings)?;
    Ok(Graph { name: network.name.name.clone(), g: elab.g, frames: elab.frames, input, output })
}

fn pick_network<'a>(root: &'a File, settings: &Settings) -> Result<&'a Def, Diagnostic> {
    let networks: Vec<&Def> = root
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Network(d) => Some(d),
            _ => None,
        })
        .collect();
    let names = || networks.iter().map(|n| n.name.name.as_str()).collect::<Vec<_>>().join(", ");
    match (&settings.network, networks.as_slice()) {
        (None, [one]) => Ok(one),
        (None, []) => Err(Diagnostic::error("this file defines no network")
            .at(Span::new(root.id, 0, 0), "no `network` in this file")
            .note("a file that is compiled must contain `network NAME { input CxHxW ... }`; files with only blocks are imported")),
        (None, [first, second, ..]) => Err(Diagnostic::error(format!("this file defines several networks: {}", names()))
            .at(second.name.span, "a second network")
            .also(first.name.span, "the first network")
            .note("choose one with --network NAME")),
        (Some(want), _) => networks
            .iter()
            .copied()
            .find(|n| n.name.name == *want)
            .ok_or_else(|| Diagnostic::error(format!("no network `{want}` in this file")).note(format!("networks here: {}", names()))),
    }
}

struct Elab<'a> {
    blocks: HashMap<&'a str, &'a Def>,
    block_file: HashMap<&'a str, FileId>,
    defaults: HashMap<FileId, HashMap<LayerKind, Vec<LayerOption>>>,
    g: StableDiGraph<Node, usize>,
    frames: Vec<Frame>,
    names: HashMap<String, Span>,
    /// Block calls being expanded, to refuse recursion.
    calls: Vec<(&'a str, Span)>,
    /// Elements being elaborated inside one another (the recursion depth, bounded by `MAX_DEPTH`).
    depth: usize,
    /// The `repeat`s being expanded, innermost last, for the error at `MAX_NODES`.
    repeats: Vec<Span>,
}

/// Most elements (block uses, groups, concats, repeats) nested inside one another: far more than
/// any network needs, and far from the end of a 2 MiB thread stack.
const MAX_DEPTH: usize = 100;

const NODES_NOTE: &str = "every use of a block and every copy of a repeat makes its layers' nodes again (1 to 3 per layer: conv, batch norm, relu), \
so nested repeats multiply; the networks in archs/ have at most 822 nodes";

/// Where an element is being elaborated.
struct Cx {
    env: Env,
    file: FileId,
    frame: Option<FrameId>,
}

struct Scope {
    prefix: String,
    indexed: bool,
    next_index: usize,
    /// Each name taken, with where and whether it was given automatically.
    taken: HashMap<String, (Span, bool)>,
    /// Per kind, the suffix where the search for the next free automatic name starts (every one
    /// below is taken), so that naming n unlabelled layers of one kind takes O(n), not O(n^2).
    next_auto: HashMap<String, usize>,
}

impl Scope {
    fn module(prefix: String) -> Scope {
        Scope { prefix, indexed: false, next_index: 0, taken: HashMap::new(), next_auto: HashMap::new() }
    }

    fn indexed(prefix: String) -> Scope {
        Scope { indexed: true, ..Scope::module(prefix) }
    }

    fn path(&self, segment: &str) -> String {
        if self.prefix.is_empty() {
            segment.to_string()
        } else {
            format!("{}.{segment}", self.prefix)
        }
    }

    /// The name of the next element (at `span`): its label, its index, or an automatic name from its kind.
    fn element(&mut self, label: Option<&Ident>, kind: &str, span: Span) -> Result<String, Diagnostic> {
        let index = self.indexed.then(|| {
            self.next_index += 1;
            self.next_index - 1
        });
        match (label, index) {
            (Some(l), _) => {
                if let Some((first, automatic)) = self.taken.insert(l.name.clone(), (l.span, false)) {
                    let how = if automatic { format!("named `{}` automatically", l.name) } else { "first use".to_string() };
                    return Err(Diagnostic::error(format!("the name `{}` is used twice in one scope", l.name))
                        .at(l.span, "second use")
                        .also(first, how)
                        .note("names of layers and block instances must be unique within their block; an unlabelled one is named after its kind: `conv`, `conv_1`, `conv_2`, ..."));
                }
                Ok(self.path(&l.name))
            }
            (None, Some(i)) => Ok(self.path(&i.to_string())),
            (None, None) => Ok(self.auto(kind, span)),
        }
    }

    /// `kind`, then `kind_1`, `kind_2`, ...: the first name not yet taken in this scope.
    fn auto(&mut self, kind: &str, span: Span) -> String {
        let next = self.next_auto.entry(kind.to_string()).or_default();
        let (i, segment) = (*next..)
            .map(|i| (i, if i == 0 { kind.to_string() } else { format!("{kind}_{i}") }))
            .find(|(_, s)| !self.taken.contains_key(s))
            .expect("an unbounded sequence has a free name");
        *next = i + 1;
        self.taken.insert(segment.clone(), (span, true));
        self.path(&segment)
    }
}

impl<'a> Elab<'a> {
    fn add_node(&mut self, op: Op, name: String, span: Span, frame: Option<FrameId>, inputs: &[NodeIndex]) -> Result<NodeIndex, Diagnostic> {
        if self.g.node_count() == MAX_NODES {
            let d = Diagnostic::error(format!("too many nodes: the network has more than the {} incc accepts", thousands(MAX_NODES as u64)))
                .at(span, format!("node {} is made here", thousands(MAX_NODES as u64 + 1)));
            return Err(self.too_many_nodes(d));
        }
        if let Some(prev) = self.names.insert(name.clone(), span) {
            return Err(Diagnostic::error(format!("two layers are both named `{name}`"))
                .at(span, "second")
                .also(prev, "first")
                .note("an automatic name can collide with an explicit label: rename one of them"));
        }
        let frame = frame.expect("every node belongs to a frame");
        let n = self.g.add_node(Node { op, name, span, frame, shape: None, residual: None });
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, n, slot);
        }
        Ok(n)
    }

    /// Adds to an error at `MAX_NODES` the repeats and block uses being expanded, innermost first.
    fn too_many_nodes(&self, mut d: Diagnostic) -> Diagnostic {
        for &r in self.repeats.iter().rev() {
            d = d.also(r, "while expanding this repeat");
        }
        for (block, at) in self.calls.iter().rev() {
            d = d.also(*at, format!("in this use of `{block}`"));
        }
        d.note(NODES_NOTE)
    }

    fn add_frame(&mut self, path: String, kind: FrameKind, span: Span, parent: Option<FrameId>) -> FrameId {
        self.frames.push(Frame { path, kind, span, parent, io: None });
        FrameId(self.frames.len() - 1)
    }

    fn network(&mut self, def: &'a Def, file: FileId, settings: &Settings) -> Result<(NodeIndex, NodeIndex), Diagnostics> {
        let mut env = Env::new();
        for (key, text) in &settings.set {
            let param = def.params.iter().find(|p| p.name.name == *key).ok_or_else(|| {
                let names: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
                Diagnostic::error(format!("--set {key}: network `{}` has no parameter `{key}`", def.name.name))
                    .also(def.name.span, "network defined here")
                    .note(if names.is_empty() { "it takes no parameters".to_string() } else { format!("its parameters: {}", names.join(", ")) })
            })?;
            let value = parse_value(text, param.ty).ok_or_else(|| {
                Diagnostic::error(format!("--set {key}={text}: expected {} for `{key}`", param.ty.keyword())).also(param.ty_span, "declared here")
            })?;
            env.insert(key.clone(), value);
        }
        fill_defaults(&def.name.name, &def.params, &mut env, def.name.span)?;

        let first = def.body.first().and_then(|s| s.elements.first());
        let Some(Element { kind: ElementKind::Layer(input @ Layer { kind: LayerKind::Input, .. }), span, label }) = first else {
            let at = first.map_or(def.name.span, |e| e.span);
            return Err(Diagnostic::error(format!("network `{}` must start with its input", def.name.name))
                .at(at, "expected `input CxHxW` here")
                .note("for example `input 3x299x299`")
                .into());
        };
        if def.body[0].label.is_some() && def.body[0].elements.len() > 1 {
            return Err(Diagnostic::error("the chain that starts with `input` cannot be labelled")
                .at(def.body[0].span, "label the layers after `input` instead")
                .into());
        }
        let shape = match (&settings.input, &input.dims) {
            (Some(dims), _) => dims.clone(),
            (None, Some((dims, _))) => dims.iter().map(|&d| d as usize).collect(),
            (None, None) => {
                return Err(Diagnostic::error("input needs a size").at(input.kind_span, "write it as `input 3x299x299`").into());
            }
        };
        if shape.len() != 3 || shape.contains(&0) {
            let at = input.dims.as_ref().map_or(input.kind_span, |d| d.1);
            let shown = shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
            return Err(Diagnostic::error(format!("input must be CxHxW with every size at least 1, found `{shown}`"))
                .at(at, if shape.len() == 3 { "every size must be at least 1" } else { "expected three sizes, as in 3x299x299" })
                .into());
        }
        if let Some(o) = input.options.first() {
            return Err(Diagnostic::error("input takes no options").at(o.span, "unexpected").into());
        }
        let elements = checked_elements(&shape).filter(|&n| n <= MAX_TENSOR_ELEMENTS);
        if elements.is_none() {
            let shown = shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x");
            let size = checked_elements(&shape).map_or_else(|| "more than 2^64".to_string(), thousands);
            let message = format!("{size} elements per example, more than the {} incc accepts in one tensor", thousands(MAX_TENSOR_ELEMENTS));
            let d = match (&settings.input, &input.dims) {
                (Some(_), Some((_, at))) => Diagnostic::error(format!("--input {shown}: {message}")).at(*at, "the size that --input replaces"),
                (Some(_), None) => Diagnostic::error(format!("--input {shown}: {message}")).at(input.kind_span, "the input that --input sizes"),
                (None, _) => Diagnostic::error(format!("input {shown} has {message}")).at(input.dims.as_ref().map_or(input.kind_span, |d| d.1), "too large"),
            };
            return Err(d.into());
        }
        let mut scope = Scope::module(String::new());
        let frame = self.add_frame(scope.element(label.as_ref(), "input", *span)?, FrameKind::Layer, *span, None);
        let name = self.frames[frame.0].path.clone();
        let x = self.add_node(Op::Input(Input { shape: Shape(shape) }), name, *span, Some(frame), &[])?;
        let cx = Cx { env, file, frame: None };
        let mut out = self.chain(&def.body[0].elements[1..], x, &mut scope, &cx)?;
        for st in &def.body[1..] {
            out = self.stmt(st, None, out, &mut scope, &cx)?;
        }
        Ok((x, out))
    }

    fn seq(&mut self, stmts: &'a [Stmt], mut x: NodeIndex, scope: &mut Scope, cx: &Cx) -> Result<NodeIndex, Diagnostic> {
        for st in stmts {
            x = self.stmt(st, None, x, scope, cx)?;
        }
        Ok(x)
    }

    fn chain(&mut self, elements: &'a [Element], mut x: NodeIndex, scope: &mut Scope, cx: &Cx) -> Result<NodeIndex, Diagnostic> {
        for e in elements {
            x = self.element(e, e.label.as_ref(), x, scope, cx)?;
        }
        Ok(x)
    }

    fn stmt(&mut self, st: &'a Stmt, outer_label: Option<&'a Ident>, x: NodeIndex, scope: &mut Scope, cx: &Cx) -> Result<NodeIndex, Diagnostic> {
        let label = st.label.as_ref().or(outer_label);
        match (label, st.elements.as_slice()) {
            (Some(l), [only]) => self.element(only, Some(l), x, scope, cx),
            (Some(l), elements) => {
                let mut sub = Scope::indexed(scope.element(Some(l), "seq", st.span)?);
                self.chain(elements, x, &mut sub, cx)
            }
            (None, elements) => self.chain(elements, x, scope, cx),
        }
    }

    fn element(&mut self, e: &'a Element, label: Option<&'a Ident>, x: NodeIndex, scope: &mut Scope, cx: &Cx) -> Result<NodeIndex, Diagnostic> {
        if self.depth == MAX_DEPTH {
            return Err(Diagnostic::error(format!("nested too deeply: more than {MAX_DEPTH} levels of block uses, groups, concats and repeats"))
                .at(e.span, format!("level {}", MAX_DEPTH + 1)));
        }
        self.depth += 1;
        let out = match &e.kind {
            ElementKind::Layer(layer) => self.layer(layer, e.span, label, x, scope, cx),
            ElementKind::Call { block, args, inline } => self.call(block, args, *inline, e.span, label, x, scope, cx),
            ElementKind::Concat { branches } => self.concat(branches, None, e.span, x, scope, cx),
            ElementKind::Residual { args, branches } => {
                residual_mark(args, &cx.env, e.span).and_then(|mark| self.concat(branches, Some(mark), e.span, x, scope, cx))
            }
            ElementKind::Repeat { count, body } => self.repeat(count, body, e.span, label, x, scope, cx),
            ElementKind::Group(st) => self.stmt(st, label, x, scope, cx),
        };
        self.depth -= 1;
        out
    }

    fn layer(&mut self, layer: &'a Layer, span: Span, label: Option<&Ident>, x: NodeIndex, scope: &mut Scope, cx: &Cx) -> Result<NodeIndex, Diagnostic> {
        let no_defaults = vec![];
        let defaults = self.defaults.get(&cx.file).and_then(|d| d.get(&layer.kind)).unwrap_or(&no_defaults);
        let nodes = layer::lower(layer, defaults, &cx.env)?;
        let kind = layer.kind.keyword().replace(' ', "_");
        let name = scope.element(label, &kind, span)?;
        let frame = self.add_frame(name.clone(), FrameKind::Layer, span, cx.frame);
        let mut out = x;
        for (suffix, op) in nodes {
            let node_name = suffix.map_or_else(|| name.clone(), |s| format!("{name}.{s}"));
            out = self.add_node(op, node_name, span, Some(frame), &[out])?;
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &mut self,
        block: &Ident,
        args: &'a [Arg],
        inline: bool,
        span: Span,
        label: Option<&Ident>,
        x: NodeIndex,
        scope: &mut Scope,
        cx: &Cx,
    ) -> Result<NodeIndex, Diagnostic> {
        let Some(&def) = self.blocks.get(block.name.as_str()) else {
            let mut d = Diagnostic::error(format!("unknown block `{}`", block.name)).at(block.span, "no block of this name");
            if let Some(s) = did_you_mean(&block.name, self.blocks.keys().copied()) {
                d = d.note(format!("did you mean `{s}`?"));
            } else {
                d = d.note("define it with `block NAME(...) { ... }` here or in an imported file");
            }
            return Err(d);
        };
        if let Some(pos) = self.calls.iter().position(|(b, _)| *b == def.name.name) {
            // `calls` holds each block being expanded with the span of its use in the one before.
            let (user, _) = *self.calls.last().expect("the block found is being expanded");
            let mut d = Diagnostic::error(format!("block `{}` uses itself", def.name.name)).at(block.span, format!("`{user}` uses `{}` here", def.name.name));
            for pair in self.calls[pos..].windows(2) {
                d = d.also(pair[1].1, format!("`{}` uses `{}` here", pair[0].0, pair[1].0));
            }
            return Err(d.note("blocks cannot be recursive; use `repeat N { ... }` to stack copies"));
        }
        let env = bind_args(&def.name.name, &def.params, args, span, &cx.env)?;
        if let (true, Some(l)) = (inline, label) {
            return Err(Diagnostic::error("an inline block cannot be labelled").at(l.span, "its layers take their names in the enclosing scope"));
        }
        let name = if inline { scope.prefix.clone() } else { scope.element(label, &def.name.name, span)? };
        let frame = self.add_frame(name.clone(), FrameKind::Block { block: def.name.name.clone() }, span, cx.frame);
        let inner = Cx { env, file: self.block_file[def.name.name.as_str()], frame: Some(frame) };
        self.calls.push((&def.name.name, block.span));
        let first_index = scope.next_index;
        let out = if inline { self.seq(&def.body, x, scope, &inner) } else { self.seq(&def.body, x, &mut Scope::module(name), &inner) };
        if inline && scope.indexed && scope.next_index > first_index {
            self.frames[frame.0].path = scope.path(&format!("{first_index}-{}", scope.next_index - 1));
        }
        self.calls.pop();
        let out = out?;
        if out == x {
            return Err(Diagnostic::error(format!("block `{}` is empty", def.name.name)).at(def.name.span, "has no layers"));
        }
        self.frames[frame.0].io = Some((x, out));
        Ok(out)
    }

    fn concat(
        &mut self,
        branches: &'a [Stmt],
        mark: Option<ResidualMark>,
        span: Span,
        x: NodeIndex,
        scope: &mut Scope,
        cx: &Cx,
    ) -> Result<NodeIndex, Diagnostic> {
        if branches.is_empty() {
            let what = if mark.is_some() { "residual" } else { "concat" };
            return Err(Diagnostic::error(format!("{what} has no branches")).at(span, "add at least one branch"));
        }
        let mut outs = vec![];
        for b in branches {
            let out = self.stmt(b, None, x, scope, cx)?;
            if out == x {
                return Err(Diagnostic::error("a branch with no layers").at(b.span, "empty branch"));
            }
            outs.push(out);
        }
        let name = scope.auto("concat", span);
        let frame = match cx.frame {
            Some(f) => f,
            None => self.add_frame(name.clone(), FrameKind::Layer, span, None),
        };
        let mark = mark.map(|m| ResidualMark { projection: scope.path(&m.projection), input: x, ..m });
        let n = self.add_node(Op::Concat(Concat), name, span, Some(frame), &outs)?;
        self.g[n].residual = mark;
        Ok(n)
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &mut self,
        count: &Expr,
        body: &'a [Stmt],
        span: Span,
        label: Option<&Ident>,
        mut x: NodeIndex,
        scope: &mut Scope,
        cx: &Cx,
    ) -> Result<NodeIndex, Diagnostic> {
        let n = eval_positive(count, &cx.env, "repeat count")?;
        if n > 100_000 {
            return Err(Diagnostic::error(format!("repeat count {n} is too large")).at(count.span, "at most 100000"));
        }
        if body.is_empty() {
            return Err(Diagnostic::error("repeat has an empty body").at(span, "nothing to repeat"));
        }
        // Copies are numbered in their own indexed scope, or spliced into the enclosing one.
        let splice = label.is_none() && scope.indexed;
        let mut own = (!splice).then(|| scope.element(label, "repeat", span).map(Scope::indexed)).transpose()?;
        let first_index = scope.next_index;
        let path = match &own {
            Some(s) => s.prefix.clone(),
            None => scope.path(&format!("{first_index}-{}", first_index + n - 1)),
        };
        let frame = self.add_frame(path, FrameKind::Repeat { count: n }, span, cx.frame);
        let inner = Cx { env: cx.env.clone(), file: cx.file, frame: Some(frame) };
        let copies = own.as_mut().unwrap_or(scope);
        let single = match body {
            [Stmt { label: None, elements, .. }] if elements.len() == 1 => Some(&elements[0]),
            _ => None,
        };
        let before = self.g.node_count();
        for copy in 0..n {
            self.repeats.push(span);
            let out = match single {
                Some(e) => self.element(e, e.label.as_ref(), x, copies, &inner),
                None => copies.element(None, "copy", span).and_then(|name| self.seq(body, x, &mut Scope::indexed(name), &inner)),
            };
            self.repeats.pop();
            x = out?;
            if copy == 0 {
                // Every copy makes as many nodes as the first: refuse now what the rest would cross.
                let each = self.g.node_count() - before;
                let total = before + n * each;
                if total > MAX_NODES {
                    let d = Diagnostic::error(format!(
                        "too many nodes: this repeat would bring the network to {} nodes, more than the {} incc accepts",
                        thousands(total as u64),
                        thousands(MAX_NODES as u64)
                    ))
                    .at(span, format!("{n} copies of {} node{} each", thousands(each as u64), if each == 1 { "" } else { "s" }));
                    return Err(self.too_many_nodes(d));
                }
            }
        }
        Ok(x)
    }
}

fn residual_mark(args: &[Arg], env: &Env, span: Span) -> Result<ResidualMark, Diagnostic> {
    let mut scale = None;
    let mut projection = DEFAULT_PROJECTION.to_string();
    for (i, a) in args.iter().enumerate() {
        let key = a.name.as_ref().map(|n| n.name.as_str()).unwrap_or(if i == 0 { "scale" } else { "" });
        match (key, eval(&a.value, env)?) {
            ("scale", Value::Float(s)) => scale = Some(s),
            ("scale", Value::Int(s)) => scale = Some(s as f64),
            ("proj", Value::Str(s)) if !s.is_empty() => projection = s,
            ("scale" | "proj", v) => {
                let want = if key == "scale" { "a number for `scale`" } else { "a non-empty string for `proj`" };
                return Err(eval::type_error(a.value.span, want, &v));
            }
            _ => {
                return Err(Diagnostic::error("residual takes `scale` and `proj`")
                    .at(a.span, "unexpected argument")
                    .note("write `residual(0.17)` or `residual(scale = 0.17, proj = \"conv2d\")`"));
            }
        }
    }
    let scale = scale.ok_or_else(|| Diagnostic::error("residual needs a scale").at(span, "write `residual(0.17) { ... }` (use 1.0 for no scaling)"))?;
    // The input is filled in by `concat`, which knows it.
    Ok(ResidualMark { scale, activation: false, projection, input: NodeIndex::end() })
}
