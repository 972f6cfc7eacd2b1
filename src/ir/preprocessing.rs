//! How an image becomes the network's input, as the network declares it on its `input` line
//! (`input 3x299x299 mean 0.5 std 0.5 crop 0.875 bicubic`). What a network leaves out, whoever
//! feeds it decides (Inception's, mean = std = 0.5, `DEFAULT_CROP`, `DEFAULT_INTERPOLATION`, for
//! `incc run` and the model's metadata; the data set's own
//! defaults for `incc train` and `incc eval`).

use std::fmt;

/// timm's default evaluation crop: 87.5 % of the resized image's shorter side.
pub const DEFAULT_CROP: f64 = 0.875;
pub const DEFAULT_INTERPOLATION: Interpolation = Interpolation::Bicubic;

/// The resampling filter of the evaluation resize (PIL's, antialiased when shrinking).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

impl fmt::Display for Interpolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
        })
    }
}

/// What the `input` line declares; `None` where it says nothing. Checked by elaboration: one
/// mean and one std, or one per channel, every std non-zero, crop in (0, 1].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Preprocessing {
    /// For pixels in [0, 1]: one value for every channel, or one per channel.
    pub mean: Option<Vec<f64>>,
    pub std: Option<Vec<f64>>,
    /// The crop's share of the resized image (timm's `crop_pct`): resize to `size / crop`, then
    /// take the central `size`.
    pub crop: Option<f64>,
    pub interpolation: Option<Interpolation>,
}

/// `values` (one, or one per channel) for each of `channels` channels.
#[must_use]
pub fn per_channel(values: &[f64], channels: usize) -> Vec<f64> {
    match values {
        [one] => vec![*one; channels],
        _ => values.to_vec(),
    }
}
