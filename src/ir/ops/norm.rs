//! Batch normalisation over the channels of a feature map (inference: running statistics).

use super::{fmt_float, one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::{ParamRole, ParamSpec, Shape};
use crate::onnx::lower::{float, int, GradAt, Grads, LowerAt, Lowering};

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
        [("weight", ParamRole::BnScale), ("bias", ParamRole::BnShift), ("running_mean", ParamRole::RunningMean), ("running_var", ParamRole::RunningVar)]
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

    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) {
        // Batch statistics. Full-size passes: mean, centring, sum of squares, y = xc * scale + beta
        // (five; the per-channel arithmetic is on [1,C,1,1]). The running statistics move
        // towards `<param>/batch` (the batch mean and unbiased variance) in the step's packed
        // update (`train/update.rs`), as PyTorch and TensorFlow's fused batch norm.
        let x = at.inputs[0].as_str();
        let axes = cx.ints(&[0, 2, 3]);
        let keep = || vec![int("keepdims", 1)];
        let mean = cx.op("ReduceMean", at.internal("mean"), &[x, &axes], keep());
        let xc = cx.op("Sub", at.internal("xc"), &[x, &mean], vec![]);
        let sum_sq = cx.op("ReduceSumSquare", at.internal("sum_sq"), &[&xc, &axes], keep());
        let (per_value, per_value_unbiased) = counts(cx, at);
        let var = cx.op("Mul", at.internal("var"), &[&sum_sq, &per_value], vec![]);
        let eps = cx.scalar(at.internal("eps"), self.eps as f32);
        let var_eps = cx.op("Add", at.internal("var_eps"), &[&var, &eps], vec![]);
        let minus_half = cx.scalar("const/-0.5".into(), -0.5);
        let invstd = cx.op("Pow", at.internal("invstd"), &[&var_eps, &minus_half], vec![]);
        let shape4 = cx.ints(&[1, -1, 1, 1]);
        let gamma4 = cx.op("Reshape", at.internal("gamma4"), &[&at.param("weight"), &shape4], vec![]);
        let beta4 = cx.op("Reshape", at.internal("beta4"), &[&at.param("bias"), &shape4], vec![]);
        let scale = cx.op("Mul", at.internal("scale"), &[&gamma4, &invstd], vec![]);
        let scaled = cx.op("Mul", at.internal("scaled"), &[&xc, &scale], vec![]);
        cx.node("Add", at.name, &[&scaled, &beta4], &[&at.output], vec![]);
        cx.op("Identity", format!("{}/batch", at.param("running_mean")), &[&mean], vec![]);
        cx.op("Mul", format!("{}/batch", at.param("running_var")), &[&sum_sq, &per_value_unbiased], vec![]);
    }

    fn running_momentum(&self) -> Option<f32> {
        Some(self.momentum as f32)
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        // With batch statistics, m values per channel, s = sum(dY * xc):
        // dX = scale * (dY - sum(dY) / m - xc * invstd^2 * s / m) = dY * a + xc * b + c with
        // a = scale, b = -scale * invstd^2 * s / m, c = -scale * sum(dY) / m ([1,C,1,1] each).
        // Full-size passes: two sums, dY * xc, and the four of dX.
        let dy = g.dy.as_str();
        let (xc, invstd, scale) = (at.internal("xc"), at.internal("invstd"), at.internal("scale"));
        let axes = cx.ints(&[0, 2, 3]);
        let keep = || vec![int("keepdims", 1)];
        let flat = cx.ints(&[-1]);
        let sum_dy = cx.op("ReduceSum", at.internal("d/sum_dy"), &[dy, &axes], keep());
        let dy_xc = cx.op("Mul", at.internal("d/dy_xc"), &[dy, &xc], vec![]);
        let s = cx.op("ReduceSum", at.internal("d/sum_dy_xc"), &[&dy_xc, &axes], keep());
        let s_invstd = cx.op("Mul", at.internal("d/s_invstd"), &[&s, &invstd], vec![]);
        let dgamma = cx.op("Reshape", at.internal("dweight"), &[&s_invstd, &flat], vec![]);
        let dbeta = cx.op("Reshape", at.internal("dbias"), &[&sum_dy, &flat], vec![]);
        let dx = g.wants[0].then(|| {
            let minus_scale_m = cx.op("Mul", at.internal("d/minus_scale_m"), &[&scale, &at.internal("minus_per_value")], vec![]);
            let s_invstd2 = cx.op("Mul", at.internal("d/s_invstd2"), &[&s_invstd, &invstd], vec![]);
            let b = cx.op("Mul", at.internal("d/b"), &[&s_invstd2, &minus_scale_m], vec![]);
            let c = cx.op("Mul", at.internal("d/c"), &[&sum_dy, &minus_scale_m], vec![]);
            let dy_a = cx.op("Mul", at.internal("d/dy_a"), &[dy, &scale], vec![]);
            let xc_b = cx.op("Mul", at.internal("d/xc_b"), &[&xc, &b], vec![]);
            let xc_b_c = cx.op("Add", at.internal("d/xc_b_c"), &[&xc_b, &c], vec![]);
            cx.op("Add", at.internal("dx"), &[&dy_a, &xc_b_c], vec![])
        });
        Some(Grads { inputs: vec![dx], params: vec![("weight", dgamma), ("bias", dbeta)] })
    }
}

/// 1/m, 1/(m-1) and -1/m for the m = N*H*W values of each channel, as `<node>/per_value`,
/// `<node>/per_value_unbiased` and `<node>/minus_per_value` (for the backward pass): constants
/// when the batch size is known. Returns the first two.
fn counts(cx: &mut Lowering, at: &LowerAt) -> (String, String) {
    let shape = &at.input_shapes[0].0;
    let spatial = (shape[1] * shape[2]) as f32;
    let (per_value, unbiased, minus) = (at.internal("per_value"), at.internal("per_value_unbiased"), at.internal("minus_per_value"));
    match cx.batch {
        Some(n) => {
            let m = n as f32 * spatial;
            cx.scalar(minus, -1.0 / m);
            (cx.scalar(per_value, 1.0 / m), cx.scalar(unbiased, 1.0 / (m - 1.0)))
        }
        None => {
            let n = cx.batch_size();
            let spatial = cx.scalar(format!("const/{spatial:e}"), spatial);
            let m = cx.op("Mul", at.internal("m"), &[&n, &spatial], vec![]);
            let one = cx.scalar("const/one".into(), 1.0);
            let m_1 = cx.op("Sub", at.internal("m_1"), &[&m, &one], vec![]);
            let per_value = cx.op("Reciprocal", per_value, &[&m], vec![]);
            cx.op("Neg", minus, &[&per_value], vec![]);
            (per_value, cx.op("Reciprocal", unbiased, &[&m_1], vec![]))
        }
    }
}
