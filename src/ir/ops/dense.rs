//! Fully connected layer on a flat vector.

use super::{one_input, Cost, OpRule, ShapeError};
use crate::ir::lower::{int, GradAt, Grads, LowerAt, Lowering};
use crate::ir::{ParamRole, ParamSpec, Shape};

#[derive(Clone, Debug, PartialEq)]
pub struct Fc {
    pub out_features: usize,
    pub bias: bool,
}

impl OpRule for Fc {
    fn kind(&self) -> &'static str {
        "fc"
    }

    fn describe(&self) -> String {
        let bias = if self.bias { " +bias" } else { "" };
        format!("-> {}{bias}", self.out_features)
    }

    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let x = one_input("fc", inputs)?;
        if x.0.len() != 1 {
            return Err(ShapeError::new(format!("fc needs a flat vector, but its input is the feature map {x} (add `flatten` or `global avgpool` before it)"))
                .at_input(0));
        }
        Ok(Shape(vec![self.out_features]))
    }

    fn params(&self, inputs: &[&Shape], _output: &Shape) -> Vec<ParamSpec> {
        let mut params = vec![ParamSpec { suffix: "weight", shape: vec![self.out_features, inputs[0].0[0]], role: ParamRole::Weight }];
        if self.bias {
            params.push(ParamSpec { suffix: "bias", shape: vec![self.out_features], role: ParamRole::Bias });
        }
        params
    }

    fn cost(&self, inputs: &[&Shape], output: &Shape) -> Cost {
        Cost::linear((inputs[0].0[0] * self.out_features) as u64, output)
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        let inputs = at.linear_inputs(self.bias);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        cx.node("Gemm", at.name, &inputs, &[&at.output], vec![int("transB", 1)]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let (x, dy, weight) = (at.inputs[0].as_str(), g.dy.as_str(), at.param("weight"));
        let dx = g.wants[0].then(|| cx.op("Gemm", at.internal("dx"), &[dy, &weight], vec![]));
        let mut params = vec![("weight", cx.op("Gemm", at.internal("dw"), &[dy, x], vec![int("transA", 1)]))];
        if self.bias {
            let axes = cx.ints(&[0]);
            params.push(("bias", cx.op("ReduceSum", at.internal("db"), &[dy, &axes], vec![int("keepdims", 0)])));
        }
        Some(Grads { inputs: vec![dx], params })
    }

    fn backward_macs(&self, inputs: &[&Shape], output: &Shape, input_grad: bool) -> u64 {
        self.cost(inputs, output).macs * (1 + u64::from(input_grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::testing::{apply, check_lowerings, infer};

    #[test]
    fn shape_rule_and_its_errors() {
        assert_eq!(infer(&Fc { out_features: 10, bias: true }, &[&[20]]).unwrap().0, [10]);
        let err = infer(&Fc { out_features: 10, bias: true }, &[&[3, 4, 4]]).unwrap_err();
        assert_eq!(err.message, "fc needs a flat vector, but its input is the feature map 3x4x4 (add `flatten` or `global avgpool` before it)");
        assert_eq!(err.input, Some(0));
        assert_eq!(infer(&Fc { out_features: 10, bias: true }, &[&[20], &[20]]).unwrap_err().message, "fc takes one input, got 2");
    }

    #[test]
    fn params_and_cost() {
        let a = apply(&Fc { out_features: 10, bias: true }, &[&[20]]);
        assert_eq!(a.output, [10]);
        assert_eq!(a.params, [("weight", vec![10, 20], ParamRole::Weight), ("bias", vec![10], ParamRole::Bias)]);
        assert_eq!(a.cost, Cost { macs: 200, fvcore: 200, activations: 10 });
        assert_eq!(a.backward_macs, [400, 200]);
        assert_eq!(apply(&Fc { out_features: 10, bias: false }, &[&[20]]).params.len(), 1);
    }

    #[test]
    fn gradient_is_well_formed() {
        for bias in [true, false] {
            assert!(check_lowerings(&Fc { out_features: 3, bias }, &[&[5]]).is_some());
        }
    }
}
