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

    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) {
        // Batch statistics; the running ones move by `momentum`, with the unbiased variance
        // (as PyTorch and TensorFlow's fused batch norm).
        let x = at.inputs[0].as_str();
        let axes = cx.ints(&[0, 2, 3]);
        let keep = || vec![int("keepdims", 1)];
        let mean = cx.op("ReduceMean", at.internal("mean"), &[x, &axes], keep());
        let xc = cx.op("Sub", at.internal("xc"), &[x, &mean], vec![]);
        let sq = cx.op("Mul", at.internal("sq"), &[&xc, &xc], vec![]);
        let var = cx.op("ReduceMean", at.internal("var"), &[&sq, &axes], keep());
        let eps = cx.scalar(at.internal("eps"), self.eps as f32);
        let var_eps = cx.op("Add", at.internal("var_eps"), &[&var, &eps], vec![]);
        let std = cx.op("Sqrt", at.internal("std"), &[&var_eps], vec![]);
        let invstd = cx.op("Reciprocal", at.internal("invstd"), &[&std], vec![]);
        let xhat = cx.op("Mul", at.internal("xhat"), &[&xc, &invstd], vec![]);
        let shape4 = cx.ints(&[1, -1, 1, 1]);
        let gamma4 = cx.op("Reshape", at.internal("gamma4"), &[&at.param("weight"), &shape4], vec![]);
        let beta4 = cx.op("Reshape", at.internal("beta4"), &[&at.param("bias"), &shape4], vec![]);
        let scaled = cx.op("Mul", at.internal("scaled"), &[&xhat, &gamma4], vec![]);
        cx.node("Add", at.name, &[&scaled, &beta4], &[&at.output], vec![]);

        let flat = cx.ints(&[-1]);
        let mean_c = cx.op("Reshape", at.internal("mean_c"), &[&mean, &flat], vec![]);
        let var_c = cx.op("Reshape", at.internal("var_c"), &[&var, &flat], vec![]);
        let size = cx.op("Size", at.internal("size"), &[x], vec![]);
        let size_f = cx.op("Cast", at.internal("size_f"), &[&size], vec![int("to", 1)]);
        let channels = cx.scalar(at.internal("channels"), at.input_shapes[0].channels() as f32);
        let m = cx.op("Div", at.internal("m"), &[&size_f, &channels], vec![]);
        let one = cx.scalar("const/one".into(), 1.0);
        let m1 = cx.op("Sub", at.internal("m_1"), &[&m, &one], vec![]);
        let bessel = cx.op("Div", at.internal("bessel"), &[&m, &m1], vec![]);
        let unbiased = cx.op("Mul", at.internal("unbiased"), &[&var_c, &bessel], vec![]);
        let keep_old = cx.scalar(at.internal("keep"), (1.0 - self.momentum) as f32);
        let take_new = cx.scalar(at.internal("momentum"), self.momentum as f32);
        for (stat, batch) in [("running_mean", &mean_c), ("running_var", &unbiased)] {
            let old = cx.op("Mul", at.internal(&format!("{stat}/old")), &[&at.param(stat), &keep_old], vec![]);
            let new = cx.op("Mul", at.internal(&format!("{stat}/new")), &[batch, &take_new], vec![]);
            cx.op("Add", format!("{}__new", at.param(stat)), &[&old, &new], vec![]);
        }
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        // With batch statistics: dX = (dY - mean(dY) - xhat * mean(dY * xhat)) * gamma / std.
        let (dy, xhat) = (g.dy.as_str(), at.internal("xhat"));
        let axes = cx.ints(&[0, 2, 3]);
        let dy_xhat = cx.op("Mul", at.internal("d/dy_xhat"), &[dy, &xhat], vec![]);
        let dx = g.wants[0].then(|| {
            let keep = || vec![int("keepdims", 1)];
            let mean_dy = cx.op("ReduceMean", at.internal("d/mean_dy"), &[dy, &axes], keep());
            let mean_dy_xhat = cx.op("ReduceMean", at.internal("d/mean_dy_xhat"), &[&dy_xhat, &axes], keep());
            let centred = cx.op("Sub", at.internal("d/centred"), &[dy, &mean_dy], vec![]);
            let proj = cx.op("Mul", at.internal("d/proj"), &[&xhat, &mean_dy_xhat], vec![]);
            let diff = cx.op("Sub", at.internal("d/diff"), &[&centred, &proj], vec![]);
            let factor = cx.op("Mul", at.internal("d/factor"), &[&at.internal("gamma4"), &at.internal("invstd")], vec![]);
            cx.op("Mul", at.internal("dx"), &[&diff, &factor], vec![])
        });
        let no_keep = || vec![int("keepdims", 0)];
        let dgamma = cx.op("ReduceSum", at.internal("dweight"), &[&dy_xhat, &axes], no_keep());
        let dbeta = cx.op("ReduceSum", at.internal("dbias"), &[dy, &axes], no_keep());
        Some(Grads { inputs: vec![dx], params: vec![("weight", dgamma), ("bias", dbeta)] })
    }
}
