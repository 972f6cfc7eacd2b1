//! Max and average pooling over windows, and global pooling to a flat vector.

use super::conv::{describe_window, window_output, Padding};
use super::{one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::lower::{int, ints, string, window, GradAt, Grads, LowerAt, Lowering, Saved, Trained};
use crate::ir::Shape;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: Padding,
    /// Average pooling only: whether padded zeros count in the divisor (PyTorch's default; TF
    /// "SAME" excludes them).
    pub count_include_pad: bool,
}

impl Pool {
    pub fn pads(&self, input: &Shape) -> [usize; 4] {
        self.padding.resolve(input.grid().unwrap_or((0, 0)), self.kernel, self.stride)
    }

    /// 1 / (the number of cells each output averages), per output position, row-major.
    fn inverse_counts(&self, (h, w): (usize, usize), (ho, wo): (usize, usize), [t, l, _, _]: [usize; 4]) -> Vec<f32> {
        let inside = |o: usize, stride: usize, pad: usize, k: usize, size: usize| {
            let start = (o * stride) as isize - pad as isize;
            (start.max(0)..(start + k as isize).min(size as isize)).count()
        };
        let mut out = Vec::with_capacity(ho * wo);
        for oy in 0..ho {
            for ox in 0..wo {
                let count = if self.count_include_pad {
                    self.kernel[0] * self.kernel[1]
                } else {
                    inside(oy, self.stride[0], t, self.kernel[0], h) * inside(ox, self.stride[1], l, self.kernel[1], w)
                };
                out.push(1.0 / count as f32);
            }
        }
        out
    }
}

impl OpRule for Pool {
    fn kind(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "maxpool",
            PoolKind::Avg => "avgpool",
        }
    }

    fn describe(&self) -> String {
        let window = describe_window(self.kernel, self.stride, self.padding);
        match (self.kind, self.count_include_pad) {
            (PoolKind::Avg, true) if self.padding != Padding::Valid => format!("{window} include_pad"),
            (PoolKind::Avg, false) if self.padding != Padding::Valid => format!("{window} exclude_pad"),
            _ => window,
        }
    }

    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let x = one_feature_map(self.kind(), inputs)?;
        let (h, w) = window_output(self.kind(), x.grid().expect("checked"), self.kernel, self.stride, self.pads(x))?;
        Ok(Shape(vec![x.channels(), h, w]))
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        let mut attrs = window(self.kernel, self.stride, self.pads(at.input_shapes[0]));
        let op = match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => {
                attrs.push(int("count_include_pad", i64::from(self.count_include_pad)));
                "AveragePool"
            }
        };
        cx.node(op, at.name, &[&at.inputs[0]], &[&at.output], attrs);
    }

    fn lower_train(&self, cx: &mut Lowering, at: &LowerAt) -> Trained {
        match self.kind {
            // Max pooling keeps the argmax of each window for the backward pass.
            PoolKind::Max => {
                let attrs = window(self.kernel, self.stride, self.pads(at.input_shapes[0]));
                let indices = at.internal("indices");
                cx.node("MaxPool", at.name, &[&at.inputs[0]], &[&at.output, &indices], attrs);
                Trained { saved: Saved::new(Argmax(indices)), ..Trained::default() }
            }
            PoolKind::Avg => {
                self.lower(cx, at);
                Trained::default()
            }
        }
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let x = at.inputs[0].as_str();
        let input = at.input_shapes[0];
        let dx = match self.kind {
            // Scatter-add dY to the flat argmax positions (overlapping windows accumulate).
            PoolKind::Max => {
                let size = cx.op("Size", at.internal("d/size"), &[x], vec![]);
                let one = cx.ints(&[1]);
                let size1 = cx.op("Reshape", at.internal("d/size1"), &[&size, &one], vec![]);
                let zeros = cx.op("ConstantOfShape", at.internal("d/zeros"), &[&size1], vec![]);
                let column = cx.ints(&[-1, 1]);
                let flat = cx.ints(&[-1]);
                let Argmax(indices) = g.saved.get::<Argmax>();
                let index = cx.op("Reshape", at.internal("d/index"), &[indices, &column], vec![]);
                let updates = cx.op("Reshape", at.internal("d/updates"), &[&g.dy, &flat], vec![]);
                let attrs = vec![string("reduction", "add")];
                let scattered = cx.op("ScatterND", at.internal("d/scattered"), &[&zeros, &index, &updates], attrs);
                let shape = cx.op("Shape", at.internal("d/shape"), &[x], vec![]);
                cx.op("Reshape", at.internal("dx"), &[&scattered, &shape], vec![])
            }
            // Each output spreads dY / (its window's count) back over its window: a depthwise
            // transposed conv with a kernel of ones.
            PoolKind::Avg => {
                let (h, w) = input.grid()?;
                let pads = self.pads(input);
                let out = window_output("avgpool", (h, w), self.kernel, self.stride, pads).ok()?;
                let inverse_counts = self.inverse_counts((h, w), out, pads);
                let counts = cx.floats(at.internal("d/inverse_counts"), &[1, 1, out.0, out.1], inverse_counts);
                let scaled = cx.op("Mul", at.internal("d/scaled"), &[&g.dy, &counts], vec![]);
                let c = input.channels();
                let ones = cx.floats(at.internal("d/ones"), &[c, 1, self.kernel[0], self.kernel[1]], vec![1.0; c * self.kernel[0] * self.kernel[1]]);
                let (rh, rw) = ((h + pads[0] + pads[2] - self.kernel[0]) % self.stride[0], (w + pads[1] + pads[3] - self.kernel[1]) % self.stride[1]);
                let mut attrs = window(self.kernel, self.stride, pads);
                attrs.push(ints("output_padding", &[rh, rw]));
                attrs.push(int("group", c as i64));
                cx.op("ConvTranspose", at.internal("dx"), &[&scaled, &ones], attrs)
            }
        };
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}

/// Max pooling's flat argmax of each window (int64, the output's shape), from the training
/// lowering to the gradient.
struct Argmax(String);

/// Pools each channel over the whole grid and flattens: CxHxW -> C.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalPool {
    pub kind: PoolKind,
}

impl OpRule for GlobalPool {
    fn kind(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "global_maxpool",
            PoolKind::Avg => "global_avgpool",
        }
    }

    fn describe(&self) -> String {
        String::new()
    }

    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        Ok(Shape(vec![one_feature_map(self.kind(), inputs)?.channels()]))
    }

    fn cost(&self, inputs: &[&Shape], _output: &Shape) -> Cost {
        let fvcore = if self.kind == PoolKind::Avg { inputs[0].numel() } else { 0 };
        Cost { fvcore, ..Cost::default() }
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        // ONNX global pools keep a 1x1 grid; incc's global pool is flat, as timm's.
        let pooled = at.internal("pooled");
        let op = if self.kind == PoolKind::Avg { "GlobalAveragePool" } else { "GlobalMaxPool" };
        cx.node(op, at.name, &[&at.inputs[0]], &[&pooled], vec![]);
        cx.intermediates.push((pooled.clone(), vec![at.input_shapes[0].channels(), 1, 1]));
        cx.node("Flatten", at.internal("flatten"), &[&pooled], &[&at.output], vec![int("axis", 1)]);
    }

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        // Average only: each cell gets dY / (H x W). Global max pooling has no gradient rule.
        if self.kind != PoolKind::Avg {
            return None;
        }
        let x = at.inputs[0].as_str();
        let (h, w) = at.input_shapes[0].grid()?;
        let shape = cx.ints(&[0, -1, 1, 1]);
        let dy4 = cx.op("Reshape", at.internal("d/dy4"), &[&g.dy, &shape], vec![]);
        let inv = cx.scalar(at.internal("d/inv_area"), 1.0 / (h * w) as f32);
        let scaled = cx.op("Mul", at.internal("d/scaled"), &[&dy4, &inv], vec![]);
        let full = cx.op("Shape", at.internal("d/shape"), &[x], vec![]);
        let dx = cx.op("Expand", at.internal("dx"), &[&scaled, &full], vec![]);
        Some(Grads { inputs: vec![Some(dx)], params: vec![] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::testing::{apply, check_lowerings, infer};

    fn pool(kind: PoolKind, kernel: usize, stride: usize, padding: Padding, count_include_pad: bool) -> Pool {
        Pool { kind, kernel: [kernel; 2], stride: [stride; 2], padding, count_include_pad }
    }

    #[test]
    fn shape_rule_and_its_errors() {
        assert_eq!(infer(&pool(PoolKind::Max, 3, 2, Padding::Valid, false), &[&[3, 17, 17]]).unwrap().0, [3, 8, 8]);
        assert_eq!(infer(&pool(PoolKind::Avg, 3, 1, Padding::Same, false), &[&[3, 13, 13]]).unwrap().0, [3, 13, 13]);
        assert_eq!(infer(&pool(PoolKind::Avg, 3, 2, Padding::Explicit([1; 4]), true), &[&[3, 13, 13]]).unwrap().0, [3, 7, 7]);
        let err = infer(&pool(PoolKind::Max, 5, 1, Padding::Valid, false), &[&[3, 4, 4]]).unwrap_err();
        assert_eq!((err.message.as_str(), err.input), ("maxpool kernel 5x5 is larger than its 4x4 input", Some(0)));
        let err = infer(&pool(PoolKind::Avg, 3, 1, Padding::Valid, false), &[&[10]]).unwrap_err();
        assert!(err.message.starts_with("avgpool needs a CxHxW feature map"), "{}", err.message);
    }

    #[test]
    fn no_params_and_no_cost() {
        let a = apply(&pool(PoolKind::Avg, 3, 1, Padding::Same, true), &[&[3, 5, 5]]);
        assert_eq!((a.params.len(), a.cost, a.backward_macs), (0, Cost::default(), [0, 0]));
    }

    #[test]
    fn average_divisors_with_and_without_the_padding() {
        let input = (3, 3);
        let excluded = pool(PoolKind::Avg, 3, 1, Padding::Same, false);
        let pads = excluded.pads(&Shape(vec![1, 3, 3]));
        let (corner, edge, centre) = (1.0 / 4.0, 1.0 / 6.0, 1.0 / 9.0);
        assert_eq!(excluded.inverse_counts(input, input, pads), [corner, edge, corner, edge, centre, edge, corner, edge, corner]);
        let included = pool(PoolKind::Avg, 3, 1, Padding::Same, true);
        assert_eq!(included.inverse_counts(input, input, pads), [centre; 9]);
    }

    #[test]
    fn every_gradient_is_well_formed() {
        for p in [
            // Max pooling's gradient reads the argmax its training form saved.
            pool(PoolKind::Max, 3, 2, Padding::Valid, false),
            pool(PoolKind::Avg, 3, 1, Padding::Same, false),
            pool(PoolKind::Avg, 3, 2, Padding::Explicit([1; 4]), true),
        ] {
            assert!(check_lowerings(&p, &[&[3, 9, 9]]).is_some(), "{}", p.describe());
        }
    }

    #[test]
    fn global_pooling_flattens_and_only_the_average_has_a_gradient() {
        let (avg, max) = (GlobalPool { kind: PoolKind::Avg }, GlobalPool { kind: PoolKind::Max });
        assert_eq!(apply(&avg, &[&[6, 5, 4]]).output, [6]);
        // fvcore counts one per input element of a global average.
        assert_eq!(apply(&avg, &[&[6, 5, 4]]).cost, Cost { fvcore: 120, ..Cost::default() });
        assert_eq!(apply(&max, &[&[6, 5, 4]]).cost, Cost::default());
        let err = infer(&avg, &[&[6]]).unwrap_err();
        assert!(err.message.starts_with("global_avgpool needs a CxHxW feature map"), "{}", err.message);
        assert!(check_lowerings(&avg, &[&[6, 5, 4]]).is_some());
        assert!(check_lowerings(&max, &[&[6, 5, 4]]).is_none());
    }
}
