//! Ops that only move data: the network input, channel concatenation, flattening.

use super::{one_input, OpRule, ShapeError};
use crate::ir::Shape;
use crate::onnx::lower::{int, GradAt, Grads, LowerAt, Lowering};

/// The network's image input, `images` [N, C, H, W].
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub shape: Shape,
}

impl OpRule for Input {
    fn kind(&self) -> &'static str {
        "input"
    }
    fn describe(&self) -> String {
        self.shape.to_string()
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        if !inputs.is_empty() {
            return Err(ShapeError::new("input takes no inputs"));
        }
        Ok(self.shape.clone())
    }

    fn lower(&self, _cx: &mut Lowering, _at: &LowerAt) {
        // The graph input `images` itself: nothing to compute.
    }
}

/// Filter concatenation: feature maps of one grid stacked along channels.
#[derive(Clone, Debug, PartialEq)]
pub struct Concat;

impl OpRule for Concat {
    fn kind(&self) -> &'static str {
        "concat"
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let first = inputs.first().ok_or_else(|| ShapeError::new("concat needs at least one branch"))?;
        let tail = &first.0[1..];
        for (slot, x) in inputs.iter().enumerate().skip(1) {
            if x.0.len() != first.0.len() || x.0[1..] != *tail {
                let grid = |s: &Shape| {
                    if s.0.len() == 3 {
                        format!("{}x{}", s.0[1], s.0[2])
                    } else {
                        format!("flat {s}")
                    }
                };
                return Err(ShapeError::new(format!(
                    "concat needs branches of one grid, but branch {} is {} ({x}) and branch 0 is {} ({first})",
                    slot,
                    grid(x),
                    grid(first)
                ))
                .at_input(slot));
            }
        }
        let mut out = first.0.clone();
        out[0] = inputs.iter().map(|x| x.0[0]).sum();
        Ok(Shape(out))
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        let inputs: Vec<&str> = at.inputs.iter().map(String::as_str).collect();
        cx.node("Concat", at.name, &inputs, &[&at.output], vec![int("axis", 1)]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        // Split the gradient back into the branches' widths.
        let widths: Vec<i64> = at.input_shapes.iter().map(|s| s.channels() as i64).collect();
        let split = cx.ints(&widths);
        let outputs: Vec<String> = (0..widths.len()).map(|i| at.internal(&format!("dx{i}"))).collect();
        let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
        cx.node("Split", at.internal("split"), &[&g.dy, &split], &names, vec![int("axis", 1)]);
        Some(Grads { inputs: outputs.into_iter().map(Some).collect(), params: vec![] })
    }
}

/// CxHxW -> C*H*W.
#[derive(Clone, Debug, PartialEq)]
pub struct Flatten;

impl OpRule for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        Ok(Shape(vec![one_input("flatten", inputs)?.numel() as usize]))
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        cx.node("Flatten", at.name, &[&at.inputs[0]], &[&at.output], vec![int("axis", 1)]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let shape = cx.op("Shape", at.internal("d/shape"), &[&at.inputs[0]], vec![]);
        let dx = cx.op("Reshape", at.internal("dx"), &[&g.dy, &shape], vec![]);
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}
