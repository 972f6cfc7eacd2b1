//! Optimizers as graph passes: the update of a flat group of parameters (see `update.rs`),
//! written in ONNX after the backward pass. State slots are graph inputs `<group>.<slot>` and
//! outputs `<group>.<slot>__new`.

use crate::ir::lower::Lowering;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Optimizer {
    /// p' = p - lr * v', v' = momentum * v + g (PyTorch); Nesterov: p' = p - lr * (g + momentum * v').
    Sgd { momentum: f32, nesterov: bool },
    /// TensorFlow's RMSProp, as the paper trained: ms' = decay * ms + (1 - decay) * g^2;
    /// mom' = momentum * mom + lr * g / sqrt(ms' + epsilon); p' = p - mom'.
    /// TF 1 starts `ms` at 1.0 (`state_init`).
    Rmsprop { decay: f32, momentum: f32, epsilon: f32 },
    /// Adam with bias correction (`step` input, from 1); `decoupled`: AdamW's weight decay.
    Adam { beta1: f32, beta2: f32, epsilon: f32, decoupled: bool },
}

impl Optimizer {
    /// The paper's RMSProp: decay 0.9, momentum 0.9, epsilon 1.0.
    pub fn paper_rmsprop() -> Optimizer {
        Optimizer::Rmsprop { decay: 0.9, momentum: 0.9, epsilon: 1.0 }
    }

    /// State slots per parameter, with the value each starts at.
    pub fn slots(&self) -> &'static [(&'static str, f32)] {
        match self {
            Optimizer::Sgd { momentum, .. } if *momentum == 0.0 => &[],
            Optimizer::Sgd { .. } => &[("momentum", 0.0)],
            Optimizer::Rmsprop { .. } => &[("ms", 1.0), ("mom", 0.0)],
            Optimizer::Adam { .. } => &[("m", 0.0), ("v", 0.0)],
        }
    }

    /// Whether the graph takes the step number (Adam's bias correction).
    pub fn needs_step(&self) -> bool {
        matches!(self, Optimizer::Adam { .. })
    }

    /// Values every parameter's update shares (Adam's bias corrections), written once.
    pub fn prepare(&self, cx: &mut Lowering) {
        if let Optimizer::Adam { beta1, beta2, .. } = *self {
            let one = cx.scalar("const/1e0".into(), 1.0);
            for (b, name) in [(beta1, "1"), (beta2, "2")] {
                let beta = cx.scalar(format!("const/{b:e}"), b);
                let power = cx.op("Pow", format!("opt/beta{name}_t"), &[&beta, "step"], vec![]);
                cx.op("Sub", format!("opt/corr{name}"), &[&one, &power], vec![]);
            }
        }
    }

    /// Writes the update of the values `param` (the flat parameters of `group`) with gradient
    /// `grad`; the slots are inputs `<group>.<slot>`. Returns the name of the new values.
    /// `decoupled_decay`: AdamW's weight decay for the group (0 where it does not apply).
    pub fn update(&self, cx: &mut Lowering, group: &str, param: &str, grad: &str, decoupled_decay: f32) -> String {
        let c = |cx: &mut Lowering, v: f32| cx.scalar(format!("const/{v:e}"), v);
        let lr = "learning_rate";
        let slot = |s: &str| format!("{group}.{s}");
        let new = |s: &str| format!("{group}.{s}__new");
        let tmp = |s: &str| format!("{group}/{s}");
        let out = format!("{group}/new");
        match *self {
            Optimizer::Sgd { momentum, nesterov } => {
                let step = if momentum == 0.0 {
                    grad.to_string()
                } else {
                    let mu = c(cx, momentum);
                    let decayed = cx.op("Mul", tmp("momentum_old"), &[&slot("momentum"), &mu], vec![]);
                    let v = cx.op("Add", new("momentum"), &[&decayed, grad], vec![]);
                    if nesterov {
                        let ahead = cx.op("Mul", tmp("ahead"), &[&v, &mu], vec![]);
                        cx.op("Add", tmp("nesterov"), &[grad, &ahead], vec![])
                    } else {
                        v
                    }
                };
                let delta = cx.op("Mul", tmp("delta"), &[&step, lr], vec![]);
                cx.op("Sub", out, &[param, &delta], vec![])
            }
            Optimizer::Rmsprop { decay, momentum, epsilon } => {
                let (rho, one_minus_rho, mu, eps) = (c(cx, decay), c(cx, 1.0 - decay), c(cx, momentum), c(cx, epsilon));
                let old = cx.op("Mul", tmp("ms_old"), &[&slot("ms"), &rho], vec![]);
                let g2 = cx.op("Mul", tmp("g2"), &[grad, grad], vec![]);
                let g2s = cx.op("Mul", tmp("g2_scaled"), &[&g2, &one_minus_rho], vec![]);
                let ms = cx.op("Add", new("ms"), &[&old, &g2s], vec![]);
                let ms_eps = cx.op("Add", tmp("ms_eps"), &[&ms, &eps], vec![]);
                let denom = cx.op("Sqrt", tmp("denom"), &[&ms_eps], vec![]);
                let glr = cx.op("Mul", tmp("g_lr"), &[grad, lr], vec![]);
                let step = cx.op("Div", tmp("step"), &[&glr, &denom], vec![]);
                let mom_old = cx.op("Mul", tmp("mom_old"), &[&slot("mom"), &mu], vec![]);
                let mom = cx.op("Add", new("mom"), &[&mom_old, &step], vec![]);
                cx.op("Sub", out, &[param, &mom], vec![])
            }
            Optimizer::Adam { beta1, beta2, epsilon, .. } => {
                let (b1, b2, one_b1, one_b2, eps) = (c(cx, beta1), c(cx, beta2), c(cx, 1.0 - beta1), c(cx, 1.0 - beta2), c(cx, epsilon));
                let m_old = cx.op("Mul", tmp("m_old"), &[&slot("m"), &b1], vec![]);
                let g1 = cx.op("Mul", tmp("g1"), &[grad, &one_b1], vec![]);
                let m = cx.op("Add", new("m"), &[&m_old, &g1], vec![]);
                let v_old = cx.op("Mul", tmp("v_old"), &[&slot("v"), &b2], vec![]);
                let g2 = cx.op("Mul", tmp("g2"), &[grad, grad], vec![]);
                let g2s = cx.op("Mul", tmp("g2_scaled"), &[&g2, &one_b2], vec![]);
                let v = cx.op("Add", new("v"), &[&v_old, &g2s], vec![]);
                // Bias corrections 1 - beta^step, from `prepare`.
                let mhat = cx.op("Div", tmp("mhat"), &[&m, "opt/corr1"], vec![]);
                let vhat = cx.op("Div", tmp("vhat"), &[&v, "opt/corr2"], vec![]);
                let root = cx.op("Sqrt", tmp("root"), &[&vhat], vec![]);
                let denom = cx.op("Add", tmp("denom"), &[&root, &eps], vec![]);
                let mut step = cx.op("Div", tmp("step"), &[&mhat, &denom], vec![]);
                if decoupled_decay != 0.0 {
                    let wd = c(cx, decoupled_decay);
                    let decay = cx.op("Mul", tmp("decoupled_decay"), &[param, &wd], vec![]);
                    step = cx.op("Add", tmp("step_decay"), &[&step, &decay], vec![]);
                }
                let delta = cx.op("Mul", tmp("delta"), &[&step, lr], vec![]);
                cx.op("Sub", out, &[param, &delta], vec![])
            }
        }
    }
}
