//! 2-D convolution (no groups, no dilation: all the Inception networks need).

use super::{one_feature_map, Cost, OpRule, ShapeError};
use crate::ir::lower::{int, ints, window, GradAt, Grads, LowerAt, Lowering};
use crate::ir::{ParamRole, ParamSpec, Shape};

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
pub(crate) fn window_output(op: &str, hw: (usize, usize), kernel: [usize; 2], stride: [usize; 2], pads: [usize; 4]) -> Result<(usize, usize), ShapeError> {
    let ph = hw.0 + pads[0] + pads[2];
    let pw = hw.1 + pads[1] + pads[3];
    if kernel[0] > ph || kernel[1] > pw {
        let padded = if pads == [0; 4] { String::new() } else { format!(" ({ph}x{pw} padded)") };
        return Err(ShapeError::new(format!("{op} kernel {}x{} is larger than its {}x{} input{padded}", kernel[0], kernel[1], hw.0, hw.1)).at_input(0));
    }
    Ok(((ph - kernel[0]) / stride[0] + 1, (pw - kernel[1]) / stride[1] + 1))
}

pub(crate) fn describe_window(kernel: [usize; 2], stride: [usize; 2], padding: Padding) -> String {
    let stride = if stride[0] == stride[1] {
        if stride[0] == 1 {
            String::new()
        } else {
            format!(" /{}", stride[0])
        }
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

impl Conv {
    /// dW from dY [N, Co, P] and the input's windows `windows` [N, P, K] (P output positions, K
    /// values per window): the sum over the examples of dY(Co x P) . windows(P x K). Either N
    /// products of Co x K, then their sum, or one product over all N*P positions, which needs dY
    /// transposed to [Co, N*P] first: whichever holds fewer values at once (P < K: the late
    /// layers, where inception_resnet_v2's conv2d_7b would make 32 products of 1536 x 2080, 390
    /// MiB, at batch 32).
    fn weight_gradient(&self, cx: &mut Lowering, at: &LowerAt, dy: &str, windows: &str, positions: usize, window: usize) -> String {
        let co = self.out_channels as i64;
        let shape_dy = cx.ints(&[0, co, -1]);
        let dy3 = cx.op("Reshape", at.internal("dw/dy3"), &[dy, &shape_dy], vec![]);
        let sum = if positions < window {
            let dy_t = cx.op("Transpose", at.internal("dw/dy_t"), &[&dy3], vec![ints("perm", &[1, 0, 2])]);
            let (as_rows, as_columns) = (cx.ints(&[co, -1]), cx.ints(&[-1, window as i64]));
            let dy_rows = cx.op("Reshape", at.internal("dw/dy_rows"), &[&dy_t, &as_rows], vec![]);
            let columns = cx.op("Reshape", at.internal("dw/windows"), &[windows, &as_columns], vec![]);
            cx.op("MatMul", at.internal("dw/sum"), &[&dy_rows, &columns], vec![])
        } else {
            let prod = cx.op("MatMul", at.internal("dw/prod"), &[&dy3, windows], vec![]);
            let batch_axis = cx.ints(&[0]);
            cx.op("ReduceSum", at.internal("dw/sum"), &[&prod, &batch_axis], vec![int("keepdims", 0)])
        };
        let [kh, kw] = self.kernel;
        let shape_w = cx.ints(&[co, (window / (kh * kw)) as i64, kh as i64, kw as i64]);
        cx.op("Reshape", at.internal("dw"), &[&sum, &shape_w], vec![])
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
        let weight =
            ParamSpec { suffix: "weight", shape: vec![self.out_channels, inputs[0].channels(), self.kernel[0], self.kernel[1]], role: ParamRole::Weight };
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

    fn gradient(&self, cx: &mut Lowering, at: &LowerAt, g: &GradAt) -> Option<Grads> {
        let x = at.inputs[0].as_str();
        let input = at.input_shapes[0];
        let (h, w) = input.grid()?;
        let [t, l, b, r] = self.pads(input);
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        // Rows and columns of the padded input that no window reaches (stride does not divide).
        let (rh, rw) = ((h + t + b - kh) % sh, (w + l + r - kw) % sw);
        let weight = at.param("weight");
        let dy = g.dy.as_str();
        let dx = g.wants[0].then(|| {
            if g.forms.flipped_conv_dx && self.stride == [1, 1] && t < kh && b < kh && l < kw && r < kw {
                // Stride 1: dX is a plain conv of dY with W transposed (in <-> out) and flipped,
                // padded k-1-p; ONNX Runtime's CPU Conv (NCHWc) is several times faster than its
                // ConvTranspose (GEMM + col2im).
                let wt = cx.op("Transpose", at.internal("dx/wt"), &[&weight], vec![ints("perm", &[1, 0, 2, 3])]);
                let flipped = if self.kernel == [1, 1] {
                    wt
                } else {
                    let starts = cx.ints(&[-1, -1]);
                    let ends = cx.ints(&[i64::MIN, i64::MIN]);
                    let axes = cx.ints(&[2, 3]);
                    let steps = cx.ints(&[-1, -1]);
                    cx.op("Slice", at.internal("dx/flipped"), &[&wt, &starts, &ends, &axes, &steps], vec![])
                };
                let attrs = window(self.kernel, [1, 1], [kh - 1 - t, kw - 1 - l, kh - 1 - b, kw - 1 - r]);
                cx.op("Conv", at.internal("dx"), &[dy, &flipped], attrs)
            } else {
                // The transposed conv; output_padding, never output_shape (it would move the pads).
                let mut attrs = window(self.kernel, self.stride, [t, l, b, r]);
                attrs.push(ints("output_padding", &[rh, rw]));
                cx.op("ConvTranspose", at.internal("dx"), &[dy, &weight], attrs)
            }
        });
        let dw = if self.kernel == [1, 1] && self.stride == [1, 1] && [t, l, b, r] == [0; 4] {
            // 1x1: dW = sum over the batch of dY(Co x HW) . X(Ci x HW)^T, a batched MatMul.
            let ci = input.channels();
            let shape_x = cx.ints(&[0, ci as i64, -1]);
            let x3 = cx.op("Reshape", at.internal("dw/x3"), &[x, &shape_x], vec![]);
            let xt = cx.op("Transpose", at.internal("dw/x3t"), &[&x3], vec![ints("perm", &[0, 2, 1])]);
            self.weight_gradient(cx, at, dy, &xt, h * w, ci)
        } else if g.forms.im2col_dw && input.channels() * kh * kw > 32 {
            // im2col: the kh x kw strided views of the padded input, stacked, times dY, summed
            // over the batch (the faster form once a window holds more than ~32 values).
            let ci = input.channels() as i64;
            let (ho, wo) = (((h + t + b - kh) / sh + 1) as i64, ((w + l + r - kw) / sw + 1) as i64);
            let pad_spec = cx.ints(&[0, 0, t as i64, l as i64, 0, 0, b as i64, r as i64]);
            let padded = cx.op("Pad", at.internal("dw/padded"), &[x, &pad_spec], vec![]);
            let axes = cx.ints(&[2, 3]);
            let steps = cx.ints(&[sh as i64, sw as i64]);
            let at2 = cx.ints(&[2]);
            let mut views = vec![];
            for i in 0..kh as i64 {
                for j in 0..kw as i64 {
                    let starts = cx.ints(&[i, j]);
                    let ends = cx.ints(&[i + sh as i64 * (ho - 1) + 1, j + sw as i64 * (wo - 1) + 1]);
                    let view = cx.op("Slice", at.internal(&format!("dw/view{i}_{j}")), &[&padded, &starts, &ends, &axes, &steps], vec![]);
                    views.push(cx.op("Unsqueeze", at.internal(&format!("dw/col{i}_{j}")), &[&view, &at2], vec![]));
                }
            }
            let refs: Vec<&str> = views.iter().map(String::as_str).collect();
            let stacked = cx.op("Concat", at.internal("dw/stacked"), &refs, vec![int("axis", 2)]);
            let cols_shape = cx.ints(&[0, ci * (kh * kw) as i64, ho * wo]);
            let cols = cx.op("Reshape", at.internal("dw/cols"), &[&stacked, &cols_shape], vec![]);
            let cols_t = cx.op("Transpose", at.internal("dw/cols_t"), &[&cols], vec![ints("perm", &[0, 2, 1])]);
            self.weight_gradient(cx, at, dy, &cols_t, (ho * wo) as usize, ci as usize * kh * kw)
        } else {
            // Few values per window (the RGB stem), or cuDNN: a conv of X (batch as channels) with
            // dY as the kernel, dilated by the stride; rows no window reaches are cropped first when
            // the padding cannot absorb them.
            let mut xin = x.to_string();
            if b < rh || r < rw {
                let ends = cx.ints(&[(h + b - rh.max(b)) as i64, (w + r - rw.max(r)) as i64]);
                let starts = cx.ints(&[0, 0]);
                let axes = cx.ints(&[2, 3]);
                xin = cx.op("Slice", at.internal("dw/crop"), &[x, &starts, &ends, &axes], vec![]);
            }
            let xt = cx.op("Transpose", at.internal("dw/xt"), &[&xin], vec![ints("perm", &[1, 0, 2, 3])]);
            let dyt = cx.op("Transpose", at.internal("dw/dyt"), &[dy], vec![ints("perm", &[1, 0, 2, 3])]);
            let pads = [t, l, b.saturating_sub(rh), r.saturating_sub(rw)];
            let attrs = vec![ints("strides", &[1, 1]), ints("dilations", &[sh, sw]), ints("pads", &pads)];
            let c = cx.op("Conv", at.internal("dw/conv"), &[&xt, &dyt], attrs);
            cx.op("Transpose", at.internal("dw"), &[&c], vec![ints("perm", &[1, 0, 2, 3])])
        };
        let mut params = vec![("weight", dw)];
        if self.bias {
            let axes = cx.ints(&[0, 2, 3]);
            params.push(("bias", cx.op("ReduceSum", at.internal("db"), &[dy, &axes], vec![int("keepdims", 0)])));
        }
        Some(Grads { inputs: vec![dx], params })
    }

    fn backward_macs(&self, inputs: &[&Shape], output: &Shape, input_grad: bool) -> u64 {
        // dW costs what the forward costs; so does dX, when it is computed.
        let forward = self.cost(inputs, output).macs;
        forward * (1 + u64::from(input_grad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::testing::{apply, check_lowerings, infer};

    fn conv(out_channels: usize, kernel: [usize; 2], stride: [usize; 2], padding: Padding, bias: bool) -> Conv {
        Conv { out_channels, kernel, stride, padding, bias }
    }

    #[test]
    fn tf_same_padding_puts_the_odd_pixel_at_the_bottom_right() {
        assert_eq!(Padding::Same.resolve((19, 19), [3, 3], [2, 2]), [1, 1, 1, 1]);
        assert_eq!(Padding::Same.resolve((20, 20), [3, 3], [2, 2]), [0, 0, 1, 1]);
        assert_eq!(Padding::Same.resolve((17, 17), [1, 7], [1, 1]), [0, 3, 0, 3]);
        assert_eq!(Padding::Explicit([1, 2, 3, 4]).resolve((5, 5), [3, 3], [1, 1]), [1, 2, 3, 4]);
    }

    #[test]
    fn shape_rule() {
        assert_eq!(infer(&conv(32, [3, 3], [2, 2], Padding::Valid, false), &[&[3, 299, 299]]).unwrap().0, [32, 149, 149]);
        assert_eq!(infer(&conv(5, [3, 3], [2, 2], Padding::Same, false), &[&[3, 19, 19]]).unwrap().0, [5, 10, 10]);
        assert_eq!(infer(&conv(5, [1, 7], [1, 1], Padding::Same, false), &[&[3, 17, 17]]).unwrap().0, [5, 17, 17]);
        assert_eq!(infer(&conv(5, [3, 3], [1, 1], Padding::Explicit([1, 1, 1, 1]), false), &[&[3, 8, 6]]).unwrap().0, [5, 8, 6]);
    }

    #[test]
    fn a_kernel_larger_than_its_input_or_a_flat_input_is_an_error_at_the_input() {
        let err = infer(&conv(4, [5, 5], [1, 1], Padding::Valid, false), &[&[3, 4, 4]]).unwrap_err();
        assert_eq!((err.message.as_str(), err.input), ("conv kernel 5x5 is larger than its 4x4 input", Some(0)));
        let err = infer(&conv(4, [6, 6], [1, 1], Padding::Explicit([0, 0, 1, 1]), false), &[&[3, 4, 4]]).unwrap_err();
        assert_eq!(err.message, "conv kernel 6x6 is larger than its 4x4 input (5x5 padded)");
        let err = infer(&conv(4, [1, 1], [1, 1], Padding::Valid, false), &[&[10]]).unwrap_err();
        assert!(err.message.starts_with("conv needs a CxHxW feature map, but its input is the flat vector 10"), "{}", err.message);
        assert!(infer(&conv(4, [1, 1], [1, 1], Padding::Valid, false), &[&[3, 4, 4], &[3, 4, 4]]).is_err());
    }

    #[test]
    fn params_cost_and_backward_cost() {
        // 4x6x6 -> 5x4x4: 80 outputs of 4 * 3 * 3 multiply-adds each.
        let a = apply(&conv(5, [3, 3], [1, 1], Padding::Valid, true), &[&[4, 6, 6]]);
        assert_eq!(a.params, [("weight", vec![5, 4, 3, 3], ParamRole::Weight), ("bias", vec![5], ParamRole::Bias)]);
        assert_eq!(a.cost, Cost { macs: 2880, fvcore: 2880, activations: 80 });
        // dW costs the forward's multiply-adds, dX as much again.
        assert_eq!(a.backward_macs, [5760, 2880]);
        assert_eq!(apply(&conv(5, [3, 3], [1, 1], Padding::Valid, false), &[&[4, 6, 6]]).params.len(), 1);
    }

    #[test]
    fn every_gradient_form_is_well_formed() {
        for (c, input) in [
            // Stride 1 (dX as a conv on the CPU), im2col dW (4 * 3 * 3 > 32 values per window).
            (conv(5, [3, 3], [1, 1], Padding::Same, true), [4, 7, 7]),
            // 1x1: dW as one batched MatMul, or (fewer positions than channels) one MatMul.
            (conv(5, [1, 1], [1, 1], Padding::Valid, false), [4, 7, 7]),
            (conv(5, [1, 1], [1, 1], Padding::Valid, false), [20, 3, 3]),
            // im2col with fewer positions than window values.
            (conv(5, [3, 3], [1, 1], Padding::Same, false), [8, 3, 3]),
            // The RGB stem, stride 2 with rows no window reaches: the dilated-conv dW, cropped.
            (conv(5, [3, 3], [2, 2], Padding::Valid, false), [3, 8, 8]),
            // Asymmetric TF padding, 1x7.
            (conv(5, [1, 7], [2, 2], Padding::Same, false), [6, 9, 9]),
        ] {
            assert!(check_lowerings(&c, &[&input]).is_some());
        }
    }
}
