//! Ops that only move data: the network input, channel concatenation, flattening.

use super::{one_input, OpRule, ShapeError};
use crate::ir::lower::{int, GradAt, Grads, LowerAt, Lowering};
use crate::ir::Shape;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::testing::{apply, check_lowerings, infer};
    use crate::ir::ops::Cost;

    #[test]
    fn the_input_takes_no_inputs_and_has_no_gradient_rule() {
        let input = Input { shape: Shape(vec![3, 8, 8]) };
        assert_eq!(apply(&input, &[]).output, [3, 8, 8]);
        assert_eq!(infer(&input, &[&[3, 8, 8]]).unwrap_err().message, "input takes no inputs");
        assert!(check_lowerings(&input, &[]).is_none());
    }

    #[test]
    fn concat_stacks_channels_of_one_grid() {
        let a = apply(&Concat, &[&[3, 5, 5], &[4, 5, 5], &[1, 5, 5]]);
        assert_eq!((a.output, a.params.len(), a.cost), (vec![8, 5, 5], 0, Cost::default()));
        assert_eq!(infer(&Concat, &[&[3], &[4]]).unwrap().0, [7]);
        let err = infer(&Concat, &[&[3, 5, 5], &[4, 5, 5], &[4, 4, 4]]).unwrap_err();
        assert_eq!(err.message, "concat needs branches of one grid, but branch 2 is 4x4 (4x4x4) and branch 0 is 5x5 (3x5x5)");
        assert_eq!(err.input, Some(2));
        assert_eq!(
            infer(&Concat, &[&[3, 5, 5], &[4]]).unwrap_err().message,
            "concat needs branches of one grid, but branch 1 is flat 4 (4) and branch 0 is 5x5 (3x5x5)"
        );
        assert_eq!(infer(&Concat, &[]).unwrap_err().message, "concat needs at least one branch");
    }

    #[test]
    fn flatten_makes_a_vector() {
        assert_eq!(apply(&Flatten, &[&[3, 4, 5]]).output, [60]);
        assert_eq!(infer(&Flatten, &[&[3], &[3]]).unwrap_err().message, "flatten takes one input, got 2");
    }

    #[test]
    fn every_gradient_is_well_formed() {
        assert!(check_lowerings(&Concat, &[&[3, 5, 5], &[4, 5, 5]]).is_some());
        assert!(check_lowerings(&Flatten, &[&[3, 4, 5]]).is_some());
    }
}
