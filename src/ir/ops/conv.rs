//! 2-D convolution (no groups, no dilation: all the Inception networks need).

use super::{one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::{ParamRole, ParamSpec, Shape};
use crate::onnx::lower::{int, ints, window, LowerAt, Lowering};

/// How a window op pads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding.
    Valid,
    /// TensorFlow "SAME": output = ceil(input / stride); any odd total goes to the bottom/right.
    Same,
    /// Explicit (top, left, bottom, right).
    Explicit([usize; 4]),
}

impl Padding {
    /// (top, left, bottom, right) for an input of `hw`.
    pub fn resolve(self, hw: (usize, usize), kernel: [usize; 2], stride: [usize; 2]) -> [usize; 4] {
        match self {
            Padding::Valid => [0; 4],
            Padding::Explicit(p) => p,
            Padding::Same => {
                let total = |size: usize, k: usize, s: usize| {
                    let out = size.div_ceil(s);
                    ((out.saturating_sub(1)) * s + k).saturating_sub(size)
                };
                let th = total(hw.0, kernel[0], stride[0]);
                let tw = total(hw.1, kernel[1], stride[1]);
                [th / 2, tw / 2, th - th / 2, tw - tw / 2]
            }
        }
    }

    pub fn describe(self) -> String {
        match self {
            Padding::Valid => "valid".into(),
            Padding::Same => "same".into(),
            Padding::Explicit([t, l, b, r]) if t == b && l == r && t == l => format!("pad {t}"),
            Padding::Explicit([t, l, b, r]) if t == b && l == r => format!("pad ({t}, {l})"),
            Padding::Explicit([t, l, b, r]) => format!("pad ({t}, {l}, {b}, {r})"),
        }
    }
}

/// Output size of a sliding window, or an error when the window does not fit.
pub(crate) fn window_output(
    op: &str,
    hw: (usize, usize),
    kernel: [usize; 2],
    stride: [usize; 2],
    pads: [usize; 4],
) -> Result<(usize, usize), ShapeError> {
    let ph = hw.0 + pads[0] + pads[2];
    let pw = hw.1 + pads[1] + pads[3];
    if kernel[0] > ph || kernel[1] > pw {
        let padded = if pads == [0; 4] { String::new() } else { format!(" ({ph}x{pw} padded)") };
        return Err(ShapeError::new(format!(
            "{op} kernel {}x{} is larger than its {}x{} input{padded}",
            kernel[0], kernel[1], hw.0, hw.1
        ))
        .at_input(0));
    }
    Ok(((ph - kernel[0]) / stride[0] + 1, (pw - kernel[1]) / stride[1] + 1))
}

pub(crate) fn describe_window(kernel: [usize; 2], stride: [usize; 2], padding: Padding) -> String {
    let stride = if stride[0] == stride[1] {
        if stride[0] == 1 { String::new() } else { format!(" /{}", stride[0]) }
    } else {
        format!(" /({}, {})", stride[0], stride[1])
    };
    format!("{}x{}{stride} {}", kernel[0], kernel[1], padding.describe())
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: Padding,
    pub bias: bool,
}

impl Conv {
    pub fn pads(&self, input: &Shape) -> [usize; 4] {
        self.padding.resolve(input.grid().unwrap_or((0, 0)), self.kernel, self.stride)
    }
}

impl OpRule for Conv {
    fn kind(&self) -> &'static str {
        "conv"
    }

    fn describe(&self) -> String {
        let bias = if self.bias { " +bias" } else { "" };
        format!("{} -> {}{bias}", describe_window(self.kernel, self.stride, self.padding), self.out_channels)
    }

    fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        let x = one_feature_map("conv", inputs)?;
        let hw = x.grid().expect("checked feature map");
        let (h, w) = window_output("conv", hw, self.kernel, self.stride, self.pads(x))?;
        Ok(Shape(vec![self.out_channels, h, w]))
    }

    fn params(&self, inputs: &[&Shape], _output: &Shape) -> Vec<ParamSpec> {
        let weight = ParamSpec {
            suffix: "weight",
            shape: vec![self.out_channels, inputs[0].channels(), self.kernel[0], self.kernel[1]],
            role: ParamRole::Weight,
        };
        let mut params = vec![weight];
        if self.bias {
            params.push(ParamSpec { suffix: "bias", shape: vec![self.out_channels], role: ParamRole::Bias });
        }
        params
    }

    fn cost(&self, inputs: &[&Shape], output: &Shape) -> Cost {
        let per_output = (inputs[0].channels() * self.kernel[0] * self.kernel[1]) as u64;
        Cost::linear(output.numel() * per_output, output)
    }

    fn lower(&self, cx: &mut Lowering, at: &LowerAt) {
        let inputs = at.linear_inputs(self.bias);
        let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let mut attrs = window(self.kernel, self.stride, self.pads(at.input_shapes[0]));
        attrs.push(ints("dilations", &[1, 1]));
        attrs.push(int("group", 1));
        cx.node("Conv", at.name, &inputs, &[&at.output], attrs);
    }
}
