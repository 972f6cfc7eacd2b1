//! Batch normalisation over the channels of a feature map (inference: running statistics).

use super::{fmt_float, one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::lower::{float, int, GradAt, Grads, LowerAt, Lowering, RunningStat, Saved, Trained};
use crate::ir::{ParamRole, ParamSpec, Shape};

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

    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) -> Trained {
        // Batch statistics. Full-size passes: mean, centring, sum of squares, y = xc * scale + beta
        // (five; the per-channel arithmetic is on [1,C,1,1]). The running statistics move
        // towards the batch mean and unbiased variance in the step's packed update
        // (`train/update.rs`), as PyTorch and TensorFlow's fused batch norm.
        let x = at.inputs[0].as_str();
        let axes = cx.ints(&[0, 2, 3]);
        let keep = || vec![int("keepdims", 1)];
        let mean = cx.op("ReduceMean", at.internal("mean"), &[x, &axes], keep());
        let xc = cx.op("Sub", at.internal("xc"), &[x, &mean], vec![]);
        let sum_sq = per_channel_sum(cx, "ReduceSumSquare", &xc, at.internal("sum_sq"));
        let counts = counts(cx, at);
        let var = cx.op("Mul", at.internal("var"), &[&sum_sq, &counts.per_value], vec![]);
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
        let batch_mean = cx.op("Identity", at.internal("batch_mean"), &[&mean], vec![]);
        let batch_var = cx.op("Mul", at.internal("batch_var"), &[&sum_sq, &counts.per_value_unbiased], vec![]);
        let momentum = self.momentum as f32;
        Trained {
            running: vec![
                RunningStat { suffix: "running_mean", batch: batch_mean, momentum },
                RunningStat { suffix: "running_var", batch: batch_var, momentum },
            ],
            channel_stats: vec![("mean_c", mean), ("var_c", var)],
            saved: Saved::new(BatchStats { xc, invstd, scale, minus_per_value: counts.minus_per_value }),
        }
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        // With batch statistics, m values per channel, s = sum(dY * xc):
        // dX = scale * (dY - sum(dY) / m - xc * invstd^2 * s / m) = dY * a + xc * b + c with
        // a = scale, b = -scale * invstd^2 * s / m, c = -scale * sum(dY) / m ([1,C,1,1] each).
        // Full-size passes: two sums, dY * xc, and the four of dX.
        let dy = g.dy.as_str();
        let BatchStats { xc, invstd, scale, minus_per_value } = g.saved.get::<BatchStats>();
        let flat = cx.ints(&[-1]);
        let sum_dy = per_channel_sum(cx, "ReduceSum", dy, at.internal("d/sum_dy"));
        let dy_xc = cx.op("Mul", at.internal("d/dy_xc"), &[dy, xc], vec![]);
        let s = per_channel_sum(cx, "ReduceSum", &dy_xc, at.internal("d/sum_dy_xc"));
        let s_invstd = cx.op("Mul", at.internal("d/s_invstd"), &[&s, invstd], vec![]);
        let dgamma = cx.op("Reshape", at.internal("dweight"), &[&s_invstd, &flat], vec![]);
        let dbeta = cx.op("Reshape", at.internal("dbias"), &[&sum_dy, &flat], vec![]);
        let dx = g.wants[0].then(|| {
            let minus_scale_m = cx.op("Mul", at.internal("d/minus_scale_m"), &[scale, minus_per_value], vec![]);
            let s_invstd2 = cx.op("Mul", at.internal("d/s_invstd2"), &[&s_invstd, invstd], vec![]);
            let b = cx.op("Mul", at.internal("d/b"), &[&s_invstd2, &minus_scale_m], vec![]);
            let c = cx.op("Mul", at.internal("d/c"), &[&sum_dy, &minus_scale_m], vec![]);
            let dy_a = cx.op("Mul", at.internal("d/dy_a"), &[dy, scale], vec![]);
            let xc_b = cx.op("Mul", at.internal("d/xc_b"), &[xc, &b], vec![]);
            let xc_b_c = cx.op("Add", at.internal("d/xc_b_c"), &[&xc_b, &c], vec![]);
            cx.op("Add", at.internal("dx"), &[&dy_a, &xc_b_c], vec![])
        });
        Some(Grads { inputs: vec![dx], params: vec![("weight", dgamma), ("bias", dbeta)] })
    }
}

/// What the training lowering keeps for the backward pass: the centred input, 1 / std and
/// gamma / std ([1,C,1,1]), and -1/m.
struct BatchStats {
    xc: String,
    invstd: String,
    scale: String,
    minus_per_value: String,
}

/// The sum (`ReduceSum`) or sum of squares (`ReduceSumSquare`) of each channel of an NCHW map, as
/// [1, C, 1, 1], in two stages: along each row (W), then over N and H. Over [0, 2, 3] at once,
/// ONNX Runtime's CPU kernels add long float32 chains: `ReduceSumSquare` a channel's N*H*W values
/// in one (the batch variance of 8 x 149 x 149 values off by 5e-5, pairwise summation by 1e-7),
/// `ReduceSum` each H*W plane in a few (batch-norm gradients of a 149 x 149 map off by 2e-5).
/// Rows, then `ReduceSum`'s vectorised path over [0, 2], are as accurate as pairwise summation.
fn per_channel_sum(cx: &mut Lowering, op: &'static str, x: &str, name: String) -> String {
    let (along_w, over_n_h, shape4) = (cx.ints(&[3]), cx.ints(&[0, 2]), cx.ints(&[1, -1, 1, 1]));
    let rows = cx.op(op, format!("{name}/rows"), &[x, &along_w], vec![int("keepdims", 0)]);
    let sums = cx.op("ReduceSum", format!("{name}/channels"), &[&rows, &over_n_h], vec![int("keepdims", 0)]);
    cx.op("Reshape", name, &[&sums, &shape4], vec![])
}

/// 1/m, 1/(m-1) and -1/m for the m = N*H*W values of each channel.
struct Counts {
    per_value: String,
    per_value_unbiased: String,
    minus_per_value: String,
}

/// The counts of each channel's values: constants when the batch size is known.
fn counts(cx: &mut Lowering, at: &LowerAt) -> Counts {
    let shape = &at.input_shapes[0].0;
    let spatial = (shape[1] * shape[2]) as f32;
    let (per_value, unbiased, minus) = (at.internal("per_value"), at.internal("per_value_unbiased"), at.internal("minus_per_value"));
    match cx.batch {
        Some(n) => {
            let m = n as f32 * spatial;
            let minus_per_value = cx.scalar(minus, -1.0 / m);
            Counts { per_value: cx.scalar(per_value, 1.0 / m), per_value_unbiased: cx.scalar(unbiased, 1.0 / (m - 1.0)), minus_per_value }
        }
        None => {
            let n = cx.batch_size();
            let spatial = cx.scalar(format!("const/{spatial:e}"), spatial);
            let m = cx.op("Mul", at.internal("m"), &[&n, &spatial], vec![]);
            let one = cx.scalar("const/one".into(), 1.0);
            let m_1 = cx.op("Sub", at.internal("m_1"), &[&m, &one], vec![]);
            let per_value = cx.op("Reciprocal", per_value, &[&m], vec![]);
            let minus_per_value = cx.op("Neg", minus, &[&per_value], vec![]);
            Counts { per_value, per_value_unbiased: cx.op("Reciprocal", unbiased, &[&m_1], vec![]), minus_per_value }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::lower::LowerAt;
    use crate::ir::ops::testing::{apply, check_lowerings, infer};

    const BN: BatchNorm = BatchNorm { eps: 0.001, momentum: 0.1 };

    #[test]
    fn shape_rule_and_its_error() {
        assert_eq!(infer(&BN, &[&[4, 5, 6]]).unwrap().0, [4, 5, 6]);
        let err = infer(&BN, &[&[10]]).unwrap_err();
        assert!(err.message.starts_with("batchnorm needs a CxHxW feature map, but its input is the flat vector 10"), "{}", err.message);
    }

    #[test]
    fn params_in_state_dict_order_and_cost() {
        let a = apply(&BN, &[&[4, 5, 6]]);
        assert_eq!(
            a.params,
            [
                ("weight", vec![4], ParamRole::BnScale),
                ("bias", vec![4], ParamRole::BnShift),
                ("running_mean", vec![4], ParamRole::RunningMean),
                ("running_var", vec![4], ParamRole::RunningVar)
            ]
        );
        // fvcore counts 2 per output element; incc's convention counts none.
        assert_eq!(a.cost, Cost { macs: 0, fvcore: 240, activations: 0 });
    }

    #[test]
    fn the_training_form_hands_over_its_batch_statistics() {
        let shape = Shape(vec![4, 5, 6]);
        let at = LowerAt { name: "bn", node: "bn", inputs: vec!["x".into()], output: "y".into(), input_shapes: vec![&shape] };
        let mut cx = Lowering::default();
        let trained = BN.lower_train(&mut cx, &at);
        let running: Vec<(&str, &str, f32)> = trained.running.iter().map(|r| (r.suffix, r.batch.as_str(), r.momentum)).collect();
        assert_eq!(running, [("running_mean", "bn/batch_mean", 0.1), ("running_var", "bn/batch_var", 0.1)]);
        assert_eq!(trained.channel_stats, [("mean_c", "bn/mean".to_string()), ("var_c", "bn/var".to_string())]);
        assert!(check_lowerings(&BN, &[&[4, 5, 6]]).is_some());
    }
}
