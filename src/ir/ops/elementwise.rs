//! Ops that keep their input's shape: activations, the residual sum and scale, dropout, softmax.

use super::{fmt_float, one_input, OpRule, ShapeError, StepInput};
use crate::ir::lower::{int, GradAt, Grads, LowerAt, Lowering, Trained};
use crate::ir::Shape;

#[derive(Clone, Debug, PartialEq)]
pub struct Relu;

impl OpRule for Relu {
    fn kind(&self) -> &'static str {
        "relu"
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        Ok(one_input("relu", inputs)?.clone())
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        cx.node("Relu", at.name, &[&at.inputs[0]], &[&at.output], vec![]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let zero = cx.scalar("const/zero".into(), 0.0);
        // dY times (y > 0) as 0/1: ONNX Runtime's Mul runs on every thread, its Where on one
        // (9.7 against 23 ms at 8x64x147x147, 2 threads).
        let positive = cx.op("Greater", at.internal("d/positive"), &[&at.output, &zero], vec![]);
        let mask = cx.op("Cast", at.internal("d/mask"), &[&positive], vec![int("to", 1)]);
        let dx = cx.op("Mul", at.internal("dx"), &[&g.dy, &mask], vec![]);
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}

/// Multiplies by a constant: the residual branch's activation scaling (paper Fig 20).
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub factor: f64,
}

impl OpRule for Scale {
    fn kind(&self) -> &'static str {
        "scale"
    }
    fn describe(&self) -> String {
        format!("x {}", fmt_float(self.factor))
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        Ok(one_input("scale", inputs)?.clone())
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        let factor = cx.scalar(at.param("factor"), self.factor as f32);
        cx.node("Mul", at.name, &[&at.inputs[0], &factor], &[&at.output], vec![]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let factor = at.param("factor");
        let dx = cx.op("Mul", at.internal("dx"), &[&g.dy, &factor], vec![]);
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}

/// Elementwise sum of two tensors of one shape (the residual connection).
#[derive(Clone, Debug, PartialEq)]
pub struct Add;

impl OpRule for Add {
    fn kind(&self) -> &'static str {
        "add"
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        match inputs {
            [a, b] if a == b => Ok((*a).clone()),
            [a, b] => Err(ShapeError::new(format!("add needs two inputs of one shape, got {a} and {b}")).at_input(1)),
            _ => Err(ShapeError::new(format!("add takes two inputs, got {}", inputs.len()))),
        }
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        cx.node("Add", at.name, &[&at.inputs[0], &at.inputs[1]], &[&at.output], vec![]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let _ = (cx, at);
        // The sum passes its gradient to both terms unchanged.
        Some(Grads { inputs: g.wants.iter().map(|&w| w.then(|| g.dy.clone())).collect(), params: vec![] })
    }
}

/// The suffix of a dropout's mask input, `<node>.mask`.
const MASK: &str = "mask";

#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    /// Probability of dropping an element in training.
    pub p: f64,
}

impl OpRule for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }
    fn describe(&self) -> String {
        fmt_float(self.p)
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        Ok(one_input("dropout", inputs)?.clone())
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        // Inference: dropout is the identity.
        cx.node("Identity", at.name, &[&at.inputs[0]], &[&at.output], vec![]);
    }

    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) -> Trained {
        // The mask is a step input (`step_inputs`), already scaled by 1 / (1 - p).
        cx.node("Mul", at.name, &[&at.inputs[0], &at.param(MASK)], &[&at.output], vec![]);
        Trained::default()
    }

    fn step_inputs(&self, output: &Shape) -> Vec<StepInput> {
        vec![StepInput { suffix: MASK, shape: output.0.clone(), drop: self.p }]
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let dx = cx.op("Mul", at.internal("dx"), &[&g.dy, &at.param(MASK)], vec![]);
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Softmax;

impl OpRule for Softmax {
    fn kind(&self) -> &'static str {
        "softmax"
    }
    fn describe(&self) -> String {
        String::new()
    }
    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let x = one_input("softmax", inputs)?;
        if x.0.len() != 1 {
            return Err(ShapeError::new(format!("softmax needs a flat vector of scores, but its input is {x}")).at_input(0));
        }
        Ok(x.clone())
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        cx.node("Softmax", at.name, &[&at.inputs[0]], &[&at.output], vec![int("axis", -1)]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        // dX = Y * (dY - sum(dY * Y))
        let axes = cx.ints(&[-1]);
        let prod = cx.op("Mul", at.internal("d/prod"), &[&g.dy, &at.output], vec![]);
        let sum = cx.op("ReduceSum", at.internal("d/sum"), &[&prod, &axes], vec![int("keepdims", 1)]);
        let diff = cx.op("Sub", at.internal("d/diff"), &[&g.dy, &sum], vec![]);
        let dx = cx.op("Mul", at.internal("dx"), &[&at.output, &diff], vec![]);
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::testing::{apply, check_lowerings, infer};
    use crate::ir::ops::Cost;

    #[test]
    fn shape_keeping_ops_keep_the_shape_and_take_one_input() {
        let ops: [&dyn OpRule; 3] = [&Relu, &Scale { factor: 0.2 }, &Dropout { p: 0.2 }];
        for op in ops {
            let a = apply(op, &[&[3, 4, 5]]);
            assert_eq!((a.output, a.params.len(), a.cost), (vec![3, 4, 5], 0, Cost::default()), "{}", op.kind());
            assert_eq!(infer(op, &[&[3], &[3]]).unwrap_err().message, format!("{} takes one input, got 2", op.kind()));
        }
    }

    #[test]
    fn add_needs_two_inputs_of_one_shape() {
        assert_eq!(infer(&Add, &[&[3, 4, 4], &[3, 4, 4]]).unwrap().0, [3, 4, 4]);
        let err = infer(&Add, &[&[3, 4, 4], &[3, 4, 5]]).unwrap_err();
        assert_eq!((err.message.as_str(), err.input), ("add needs two inputs of one shape, got 3x4x4 and 3x4x5", Some(1)));
        assert_eq!(infer(&Add, &[&[3, 4, 4]]).unwrap_err().message, "add takes two inputs, got 1");
    }

    #[test]
    fn softmax_needs_a_flat_vector() {
        assert_eq!(infer(&Softmax, &[&[10]]).unwrap().0, [10]);
        let err = infer(&Softmax, &[&[3, 4, 4]]).unwrap_err();
        assert_eq!((err.message.as_str(), err.input), ("softmax needs a flat vector of scores, but its input is 3x4x4", Some(0)));
    }

    #[test]
    fn dropout_is_fed_a_mask_of_its_output_shape() {
        let inputs = Dropout { p: 0.2 }.step_inputs(&Shape(vec![3, 4, 5]));
        assert_eq!(inputs, [StepInput { suffix: "mask", shape: vec![3, 4, 5], drop: 0.2 }]);
    }

    #[test]
    fn every_gradient_is_well_formed() {
        let ops: [(&dyn OpRule, &[&[usize]]); 5] = [
            (&Relu, &[&[3, 4, 5]]),
            (&Scale { factor: 0.2 }, &[&[3, 4, 5]]),
            (&Add, &[&[3, 4, 5], &[3, 4, 5]]),
            (&Dropout { p: 0.2 }, &[&[3, 4, 5]]),
            (&Softmax, &[&[7]]),
        ];
        for (op, inputs) in ops {
            assert!(check_lowerings(op, inputs).is_some(), "{}", op.kind());
        }
    }
}
