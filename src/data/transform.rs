//! An 8-bit image to a normalised CHW tensor: the training augmentation (random crop, flip) or
//! the evaluation resize and center crop, then `(pixel / 255 - mean) / std`.

use std::borrow::Cow;

use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma, Pixel, Rgb};

use super::{DataError, RawImage};
use crate::rng::Rng;
use crate::runtime::images::resize_center_crop;

/// How training crops.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainCrop {
    /// Pad with black on every side by this many pixels, then crop the output size at a random
    /// place (the MNIST / CIFAR augmentation). An image of another size is resized first.
    Pad(usize),
    /// torchvision's RandomResizedCrop (the ImageNet augmentation): a region of a random
    /// fraction `scale` of the area and aspect ratio `ratio` (drawn log-uniformly), resized to
    /// the output bilinearly.
    RandomResized { scale: (f32, f32), ratio: (f32, f32) },
}

/// What the network wants and how to get there.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Output channels: 1 or 3. Grey images are repeated into 3; RGB ones become grey by luminance.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Augment (`crop`, `flip`) rather than resize and center-crop.
    pub train: bool,
    pub crop: TrainCrop,
    /// Flip horizontally with probability 1/2 in training.
    pub flip: bool,
    /// Evaluation: resize the shorter side to `size / crop_pct`, then center-crop (timm);
    /// 1.0 just resizes.
    pub crop_pct: f32,
    /// Per output channel, for pixels in [0, 1].
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Transform {
    /// The number of values of one transformed image: channels x height x width.
    #[must_use]
    pub fn example_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// # Errors
    /// Settings that cannot work, said in words.
    pub fn check(&self) -> Result<(), DataError> {
        let bad = |what: String| Err(DataError::Invalid(format!("transform: {what}")));
        if !matches!(self.channels, 1 | 3) {
            return bad(format!("{} channels (1 or 3 are possible)", self.channels));
        }
        if self.height == 0 || self.width == 0 {
            return bad(format!("the output {}x{} is empty", self.height, self.width));
        }
        crate::runtime::tensor::checked_len("transform: an output image", &[self.channels, self.height, self.width])?;
        if self.mean.len() != self.channels || self.std.len() != self.channels {
            return bad(format!("{} means and {} stds for {} channels", self.mean.len(), self.std.len(), self.channels));
        }
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return bad(format!("std must be finite and non-zero, got {:?}", self.std));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return bad(format!("crop_pct must be in (0, 1], got {}", self.crop_pct));
        }
        if let TrainCrop::RandomResized { scale: (s0, s1), ratio: (r0, r1) } = self.crop {
            if !(0.0 < s0 && s0 <= s1 && s1 <= 1.0 && 0.0 < r0 && r0 <= r1 && r1.is_finite()) {
                return bad(format!("random-resized crop wants 0 < scale {s0}..{s1} <= 1 and 0 < ratio {r0}..{r1}"));
            }
        }
        Ok(())
    }

    /// The transformed image, CHW. Training draws from `rng` (the crop, then the flip); whoever
    /// wants reproducible augmentation seeds it per example.
    ///
    /// # Errors
    /// Invalid settings, or an image whose pixel count does not match its size.
    pub fn apply(&self, image: &RawImage, rng: &mut Rng) -> Result<Vec<f32>, DataError> {
        let mut out = vec![0.0; self.example_len()];
        self.apply_into(image, rng, &mut out)?;
        Ok(out)
    }

    /// [`Transform::apply`] into `out` (`example_len()` values), without allocating it.
    ///
    /// # Errors
    /// As [`Transform::apply`].
    pub fn apply_into(&self, image: &RawImage, rng: &mut Rng, out: &mut [f32]) -> Result<(), DataError> {
        self.check()?;
        let RawImage { width, height, channels, ref pixels } = *image;
        if !matches!(channels, 1 | 3) || width == 0 || height == 0 || pixels.len() != width * height * channels {
            let n = pixels.len();
            return Err(DataError::Invalid(format!("a {width}x{height} image with {channels} channels cannot have {n} bytes")));
        }
        if out.len() != self.example_len() {
            return Err(DataError::Invalid(format!("{} values for a {}x{}x{} output", out.len(), self.channels, self.height, self.width)));
        }
        let image = if self.channels == 1 && channels == 3 { Cow::Owned(luminance(image)) } else { Cow::Borrowed(image) };
        let placed = match image.channels {
            1 => self.place::<Luma<u8>>(&image, rng)?,
            _ => self.place::<Rgb<u8>>(&image, rng)?,
        };
        self.normalise(&placed, image.channels, out);
        Ok(())
    }

    /// The geometric part: the output-sized pixels (same channels as `image`) and where they go.
    fn place<'a, P>(&self, image: &'a RawImage, rng: &mut Rng) -> Result<Placed<'a>, DataError>
    where
        P: Pixel<Subpixel = u8> + 'static,
    {
        let (w, h) = (self.width as u32, self.height as u32);
        let buffer = ImageBuffer::<P, &[u8]>::from_raw(image.width as u32, image.height as u32, &image.pixels[..])
            .ok_or_else(|| DataError::Invalid(format!("image of {}x{} too large", image.width, image.height)))?;
        let mut placed = Placed { pixels: Cow::Borrowed(&image.pixels[..]), dy: 0, dx: 0, flip: false };
        if !self.train {
            placed.pixels = Cow::Owned(resize_center_crop(&buffer, self.height, self.width, self.crop_pct)?.into_raw());
            return Ok(placed);
        }
        match self.crop {
            TrainCrop::Pad(pad) => {
                if buffer.dimensions() != (w, h) {
                    placed.pixels = Cow::Owned(resize_center_crop(&buffer, self.height, self.width, 1.0)?.into_raw());
                }
                let pad = pad as isize;
                placed.dy = rng.below(2 * pad as usize + 1) as isize - pad;
                placed.dx = rng.below(2 * pad as usize + 1) as isize - pad;
            }
            TrainCrop::RandomResized { scale, ratio } => {
                let (top, left, ch, cw) = random_region(image.width, image.height, scale, ratio, rng);
                let region = imageops::crop_imm(&buffer, left, top, cw, ch);
                // Triangle is PIL's BILINEAR, antialiased when shrinking, as torchvision's default.
                placed.pixels = Cow::Owned(imageops::resize(&*region, w, h, FilterType::Triangle).into_raw());
            }
        }
        placed.flip = self.flip && rng.below(2) == 1;
        Ok(placed)
    }

    /// Writes the placed pixels out, CHW, normalised; pixels shifted in from outside are black.
    fn normalise(&self, placed: &Placed<'_>, source_channels: usize, out: &mut [f32]) {
        let (h, w) = (self.height, self.width);
        for c in 0..self.channels {
            // Grey repeats into every output channel.
            let sc = if source_channels == 1 { 0 } else { c };
            let value = |v: u8| (f32::from(v) / 255.0 - self.mean[c]) / self.std[c];
            let black = value(0);
            for y in 0..h {
                let row = &mut out[(c * h + y) * w..(c * h + y + 1) * w];
                let sy = y as isize + placed.dy;
                if !(0..h as isize).contains(&sy) {
                    row.fill(black);
                    continue;
                }
                for (x, v) in row.iter_mut().enumerate() {
                    let x = if placed.flip { w - 1 - x } else { x };
                    let sx = x as isize + placed.dx;
                    *v = if (0..w as isize).contains(&sx) { value(placed.pixels[(sy as usize * w + sx as usize) * source_channels + sc]) } else { black };
                }
            }
        }
    }
}

/// Output-sized pixels, to be read shifted by (`dy`, `dx`) and mirrored when `flip`.
struct Placed<'a> {
    pixels: Cow<'a, [u8]>,
    dy: isize,
    dx: isize,
    flip: bool,
}

/// RGB to grey as PIL's `convert("L")`: ITU-R 601-2 luma, in 16-bit fixed point.
fn luminance(image: &RawImage) -> RawImage {
    let pixels =
        image.pixels.chunks_exact(3).map(|p| ((u32::from(p[0]) * 19595 + u32::from(p[1]) * 38470 + u32::from(p[2]) * 7471 + 0x8000) >> 16) as u8).collect();
    RawImage { width: image.width, height: image.height, channels: 1, pixels }
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a region of the drawn area and
/// aspect ratio that fits, else the whole image cut to the nearest allowed ratio, centered.
/// Returns (top, left, height, width).
fn random_region(width: usize, height: usize, scale: (f32, f32), ratio: (f32, f32), rng: &mut Rng) -> (u32, u32, u32, u32) {
    let area = (width * height) as f64;
    let (log_r0, log_r1) = (f64::from(ratio.0).ln(), f64::from(ratio.1).ln());
    let between = |rng: &mut Rng, lo: f64, hi: f64| lo + (hi - lo) * rng.uniform();
    for _ in 0..10 {
        let target = area * between(rng, f64::from(scale.0), f64::from(scale.1));
        let aspect = between(rng, log_r0, log_r1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if 0 < cw && cw <= width && 0 < ch && ch <= height {
            let top = rng.below(height - ch + 1);
            let left = rng.below(width - cw + 1);
            return (top as u32, left as u32, ch as u32, cw as u32);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (cw, ch) = if in_ratio < f64::from(ratio.0) {
        (width, ((width as f64 / f64::from(ratio.0)).round() as usize).clamp(1, height))
    } else if in_ratio > f64::from(ratio.1) {
        (((height as f64 * f64::from(ratio.1)).round() as usize).clamp(1, width), height)
    } else {
        (width, height)
    };
    (((height - ch) / 2) as u32, ((width - cw) / 2) as u32, ch as u32, cw as u32)
}
