//! The views of one image that multi-crop evaluation averages (`incc eval --crops N`, defined in
//! docs/experiments.md): 1 (the centre crop), 10 (AlexNet: four corners and the centre, and
//! their mirrors), 12 (the 10, and the whole image resized to the input, and its mirror) and 144
//! (GoogLeNet: 4 scales x 3 squares x 6 views x 2 mirrors). The unmirrored views come first,
//! then the same views mirrored, in the same order.

use super::DataError;
use crate::runtime::images::{center_offset, covering, resized_size};

/// A multi-crop scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Crops {
    /// The centre crop (single-crop evaluation).
    #[default]
    One,
    Ten,
    Twelve,
    /// GoogLeNet's 144.
    Dense,
}

/// GoogLeNet's shorter sides for a 224 input; other inputs scale them by input / 224.
const DENSE_SIDES: [u64; 4] = [256, 288, 320, 352];
const DENSE_INPUT: u64 = 224;

impl Crops {
    /// The scheme of `count` views: 1, 10, 12 or 144.
    #[must_use]
    pub fn from_count(count: usize) -> Option<Crops> {
        Crops::ALL.into_iter().find(|c| c.count() == count)
    }

    pub const ALL: [Crops; 4] = [Crops::One, Crops::Ten, Crops::Twelve, Crops::Dense];

    /// Views per image.
    #[must_use]
    pub fn count(self) -> usize {
        match self {
            Crops::One => 1,
            Crops::Ten => 10,
            Crops::Twelve => 12,
            Crops::Dense => 144,
        }
    }
}

/// One view of an image: resize the image to `resized` (width, height), take the `region`
/// (left, top, width, height) of that, resize the region to the output size (when it differs),
/// and mirror it left to right when `mirror`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub resized: (u32, u32),
    pub region: (u32, u32, u32, u32),
    pub mirror: bool,
}

/// The views of `crops` of an image of `dimensions` (width, height) for a `height` x `width`
/// output: the ten-crop schemes crop the single crop's resized image (`crop_pct`); the 144 its
/// own four scales.
///
/// # Errors
/// An empty image; 144 crops of a non-square output.
pub fn views(crops: Crops, dimensions: (u32, u32), height: usize, width: usize, crop_pct: f32) -> Result<Vec<View>, DataError> {
    let (h, w) = (to_u32(height)?, to_u32(width)?);
    let five = |resized: (u32, u32), (left, top, side_w, side_h): (u32, u32, u32, u32)| {
        let (right, bottom) = (left + side_w - w, top + side_h - h);
        let centre = (left + center_offset(side_w, w), top + center_offset(side_h, h));
        [(left, top), (right, top), (left, bottom), (right, bottom), centre].map(|(l, t)| View { resized, region: (l, t, w, h), mirror: false })
    };
    let mut views = match crops {
        Crops::One | Crops::Ten | Crops::Twelve => {
            let resized = resized_size(dimensions, height, width, crop_pct)?;
            let five = five(resized, (0, 0, resized.0, resized.1));
            match crops {
                Crops::One => return Ok(vec![five[4]]),
                Crops::Ten => five.to_vec(),
                _ => [&five[..], &[View { resized: (w, h), region: (0, 0, w, h), mirror: false }]].concat(),
            }
        }
        Crops::Dense => {
            if h != w {
                return Err(DataError::Invalid(format!("144 crops are defined for a square input, not {height}x{width}")));
            }
            let mut views = Vec::with_capacity(72);
            for side in DENSE_SIDES {
                // Rounded: 256 x 299 / 224 = 341.7 -> 342 (342, 384, 427, 470 at 299).
                let target = (side * u64::from(h) + DENSE_INPUT / 2) / DENSE_INPUT;
                let resized = covering(dimensions, target, target)?;
                let square = resized.0.min(resized.1);
                let (long, landscape) = if resized.0 >= resized.1 { (resized.0, true) } else { (resized.1, false) };
                for at in [0, center_offset(long, square), long - square] {
                    let region = if landscape { (at, 0, square, square) } else { (0, at, square, square) };
                    views.extend(five(resized, region));
                    views.push(View { resized, region, mirror: false });
                }
            }
            views
        }
    };
    let mirrored: Vec<View> = views.iter().map(|v| View { mirror: true, ..*v }).collect();
    views.extend(mirrored);
    Ok(views)
}

fn to_u32(n: usize) -> Result<u32, DataError> {
    u32::try_from(n).map_err(|_| DataError::Invalid(format!("an output size of {n} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_the_schemes() {
        for crops in Crops::ALL {
            let v = views(crops, (400, 300), 299, 299, 0.875).unwrap();
            assert_eq!(v.len(), crops.count(), "{crops:?}");
            assert_eq!(Crops::from_count(crops.count()), Some(crops));
        }
        assert_eq!(Crops::from_count(5), None);
    }

    #[test]
    fn dense_scales_are_googlenets_at_299() {
        let v = views(Crops::Dense, (300, 300), 299, 299, 0.875).unwrap();
        let mut sides: Vec<u32> = v.iter().map(|v| v.resized.1).collect();
        sides.dedup();
        assert_eq!(sides, [342, 384, 427, 470, 342, 384, 427, 470]);
        assert_eq!(views(Crops::Dense, (28, 28), 28, 28, 1.0).unwrap()[0].resized, (32, 32));
        assert!(views(Crops::Dense, (28, 28), 28, 27, 1.0).is_err());
    }
}
