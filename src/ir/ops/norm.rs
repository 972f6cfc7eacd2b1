//! Batch normalisation over the channels of a feature map (inference: running statistics).

use super::{fmt_float, one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::{ParamRole, ParamSpec, Shape};
use crate::onnx::lower::{float, LowerAt, Lowering};

#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub eps: f64,
    /// PyTorch convention: running = (1 - momentum) * running + momentum * batch.
    pub momentum: f64,
}

impl OpRule for BatchNorm {
    fn kind(&self) -> &'static str {
        "batchnorm"
    }

    fn describe(&self) -> String {
        format!("eps {} momentum {}", fmt_float(self.eps), fmt_float(self.momentum))
    }

    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        Ok(one_feature_map("batchnorm", inputs)?.clone())
    }

    fn params(&self, inputs: &[&Shape], _output: &Shape) -> Vec<ParamSpec> {
        let c = vec![inputs[0].channels()];
        [
            ("weight", ParamRole::BnScale),
            ("bias", ParamRole::BnShift),
            ("running_mean", ParamRole::RunningMean),
            ("running_var", ParamRole::RunningVar),
        ]
        .into_iter()
        .map(|(suffix, role)| ParamSpec { suffix, shape: c.clone(), role })
        .collect()
    }

    fn cost(&self, _inputs: &[&Shape], output: &Shape) -> Cost {
        Cost { fvcore: 2 * output.numel(), ..Cost::default() }
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        let names = ["weight", "bias", "running_mean", "running_var"].map(|s| at.param(s));
        let inputs = [at.inputs[0].as_str(), &names[0], &names[1], &names[2], &names[3]];
        cx.node("BatchNormalization", at.name, &inputs, &[&at.output], vec![float("epsilon", self.eps as f32)]);
    }
}
