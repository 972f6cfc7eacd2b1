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
    /// dW one kernel offset at a time: the input values every output position meets at offset
    /// (i, j) are a strided view of the padded input, and dW[:, :, i, j] is dY (Co x P) times that
    /// view (P x Ci), summed over the examples. No im2col tensor is built (a 3x3 kernel's is nine
    /// inputs, and stacking it cost as much as the products): one view is alive at a time, and the
    /// nine small products are 35-45% faster than one big one over stacked windows at Inception's
    /// sizes (ONNX Runtime 1.31, 2 threads). Where a map has fewer positions than output channels
    /// (the late layers), the batch goes into the product's inner dimension (X and dY transposed
    /// once) instead of making N products of Co x Ci per offset, then their sum (conv2d_7b's would
    /// be 390 MiB at batch 32).
    fn weight_gradient(&self, cx: &mut Lowering, at: &LowerAt, x: &str, dy: &str) -> String {
        let input = at.input_shapes[0];
        let (h, w) = input.grid().expect("a conv's input is a feature map");
        let (co, ci) = (self.out_channels as i64, input.channels() as i64);
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.stride;
        let [t, l, b, r] = self.pads(input);
        let (ho, wo) = ((h + t + b - kh) / sh + 1, (w + l + r - kw) / sw + 1);
        let shape_dy = cx.ints(&[0, co, -1]);
        let dy3 = cx.op("Reshape", at.internal("dw/dy3"), &[dy, &shape_dy], vec![]);
        // Each offset's view is [Ci, N*Ho*Wo] for one product over all positions (X transposed to
        // [C, N, H, W] first), or [N, Ci, Ho*Wo] for products per example summed over the batch.
        let (source, product, view_shape) = if ho * wo < self.out_channels {
            let xt = cx.op("Transpose", at.internal("dw/xt"), &[x], vec![ints("perm", &[1, 0, 2, 3])]);
            let dy_t = cx.op("Transpose", at.internal("dw/dy_t"), &[&dy3], vec![ints("perm", &[1, 0, 2])]);
            let as_rows = cx.ints(&[co, -1]);
            let dy_rows = cx.op("Reshape", at.internal("dw/dy_rows"), &[&dy_t, &as_rows], vec![]);
            (xt, Product::AllPositions { dy_rows }, cx.ints(&[ci, -1]))
        } else {
            (x.to_string(), Product::PerExample { batch_axis: cx.ints(&[0]) }, cx.ints(&[0, ci, -1]))
        };
        let padded = if [t, l, b, r] == [0; 4] {
            source
        } else {
            let pad_spec = cx.ints(&[0, 0, t as i64, l as i64, 0, 0, b as i64, r as i64]);
            cx.op("Pad", at.internal("dw/padded"), &[&source, &pad_spec], vec![])
        };
        // The axes and steps of the strided views; none where each view is the whole input.
        let whole = (ho, wo) == (h + t + b, w + l + r);
        let strided = (!whole).then(|| (cx.ints(&[2, 3]), cx.ints(&[sh as i64, sw as i64])));
        let mut per_offset = vec![];
        for i in 0..kh {
            for j in 0..kw {
                let view = match &strided {
                    None => padded.clone(),
                    Some((axes, steps)) => {
                        let starts = cx.ints(&[i as i64, j as i64]);
                        let ends = cx.ints(&[(i + sh * (ho - 1) + 1) as i64, (j + sw * (wo - 1) + 1) as i64]);
                        cx.op("Slice", at.internal(&format!("dw/view{i}_{j}")), &[&padded, &starts, &ends, axes, steps], vec![])
                    }
                };
                let part = match &product {
                    Product::AllPositions { dy_rows } => {
                        let columns = cx.op("Reshape", at.internal(&format!("dw/columns{i}_{j}")), &[&view, &view_shape], vec![]);
                        cx.op("Gemm", at.internal(&format!("dw/offset{i}_{j}")), &[dy_rows, &columns], vec![int("transB", 1)])
                    }
                    Product::PerExample { batch_axis } => {
                        let x3 = cx.op("Reshape", at.internal(&format!("dw/x3_{i}_{j}")), &[&view, &view_shape], vec![]);
                        let x3t = cx.op("Transpose", at.internal(&format!("dw/x3t{i}_{j}")), &[&x3], vec![ints("perm", &[0, 2, 1])]);
                        let prod = cx.op("MatMul", at.internal(&format!("dw/prod{i}_{j}")), &[&dy3, &x3t], vec![]);
                        cx.op("ReduceSum", at.internal(&format!("dw/offset{i}_{j}")), &[&prod, batch_axis], vec![int("keepdims", 0)])
                    }
                };
                per_offset.push(part);
            }
        }
        let shape_w = cx.ints(&[co, ci, kh as i64, kw as i64]);
        if let [only] = per_offset.as_slice() {
            return cx.op("Reshape", at.internal("dw"), &[only, &shape_w], vec![]);
        }
        // [Co, kh*kw*Ci] in offset-major order, to [Co, Ci, kh, kw].
        let refs: Vec<&str> = per_offset.iter().map(String::as_str).collect();
        let offsets = cx.op("Concat", at.internal("dw/offsets"), &refs, vec![int("axis", 1)]);
        let by_offset = cx.ints(&[co, (kh * kw) as i64, ci]);
        let grouped = cx.op("Reshape", at.internal("dw/by_offset"), &[&offsets, &by_offset], vec![]);
        let by_channel = cx.op("Transpose", at.internal("dw/by_channel"), &[&grouped], vec![ints("perm", &[0, 2, 1])]);
        cx.op("Reshape", at.internal("dw"), &[&by_channel, &shape_w], vec![])
    }
}

/// How a conv's weight gradient multiplies dY by one kernel offset's view of the input.
enum Product {
    /// One product over all N*Ho*Wo positions: dY as [Co, N*Ho*Wo] rows.
    AllPositions { dy_rows: String },
    /// A product per example, then their sum over the batch axis.
    PerExample { batch_axis: String },
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
        let pointwise = self.kernel == [1, 1] && self.stride == [1, 1] && [t, l, b, r] == [0; 4];
        let dw = if pointwise || (g.forms.dw_by_offset && input.channels() * kh * kw > 32) {
            // Products per kernel offset (a 1x1 has one, the input itself); past ~32 values per
            // window this beats the one dilated conv below on ONNX Runtime's CPU.
            self.weight_gradient(cx, at, x, dy)
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
            // Stride 1 (dX as a conv on the CPU), dW by offset (4 * 3 * 3 > 32 values per window).
            (conv(5, [3, 3], [1, 1], Padding::Same, true), [4, 7, 7]),
            // 1x1: dW as one batched MatMul, or (fewer positions than channels) one MatMul.
            (conv(5, [1, 1], [1, 1], Padding::Valid, false), [4, 7, 7]),
            (conv(5, [1, 1], [1, 1], Padding::Valid, false), [20, 3, 3]),
            // Fewer positions than output channels: dW over all examples at once.
            (conv(12, [3, 3], [1, 1], Padding::Same, false), [8, 3, 3]),
            (conv(12, [1, 1], [2, 2], Padding::Valid, false), [8, 5, 5]),
            // The RGB stem, stride 2 with rows no window reaches: the dilated-conv dW, cropped.
            (conv(5, [3, 3], [2, 2], Padding::Valid, false), [3, 8, 8]),
            // Asymmetric TF padding, 1x7.
            (conv(5, [1, 7], [2, 2], Padding::Same, false), [6, 9, 9]),
        ] {
            assert!(check_lowerings(&c, &[&input]).is_some());
        }
    }
}
