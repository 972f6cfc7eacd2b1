//! Max and average pooling over windows, and global pooling to a flat vector.

use super::conv::{describe_window, window_output, Padding};
use super::{one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::Shape;
use crate::onnx::lower::{int, window, LowerAt, Lowering};

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
}

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
}
