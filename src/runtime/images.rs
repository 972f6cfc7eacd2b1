//! Images to model input: decode, resize, center-crop, normalise (the Inception / timm evaluation
//! transform), and a deterministic synthetic batch for when no image is given.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{DynamicImage, GenericImageView, ImageBuffer, ImageError, ImageFormat, ImageReader, Pixel, RgbImage};

use super::error::RuntimeError;
use crate::rng::SplitMix64;

/// timm's default evaluation crop: the crop is 87.5% of the resized image's shorter side.
pub const DEFAULT_CROP_PCT: f32 = 0.875;

/// Inception normalisation (TF-slim, timm `inception_*`): pixels in [0, 1] mapped to [-1, 1].
pub const INCEPTION_MEAN_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// How an image becomes a CHW tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Output height (the model's input height).
    pub height: usize,
    /// Output width.
    pub width: usize,
    /// Crop size / resize size, in (0, 1].
    pub crop_pct: f32,
    /// Per-channel (R, G, B) mean, for pixels in [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl Preprocess {
    /// Inception defaults (crop 0.875, mean = std = 0.5) for an `height` x `width` input.
    #[must_use]
    pub fn new(height: usize, width: usize) -> Self {
        Self { height, width, crop_pct: DEFAULT_CROP_PCT, mean: INCEPTION_MEAN_STD, std: INCEPTION_MEAN_STD }
    }

    /// Overrides the defaults with the model's `incc.mean`, `incc.std` (`"r,g,b"`) and
    /// `incc.crop_pct` metadata, where present.
    ///
    /// # Errors
    /// A present key whose value does not parse.
    pub fn with_metadata(mut self, metadata: &BTreeMap<String, String>) -> Result<Self, RuntimeError> {
        let bad = |key: &str, value: &str, want: &str| RuntimeError::Input(format!("model metadata {key} = {value:?} is not {want}"));
        for (key, field) in [("incc.mean", &mut self.mean), ("incc.std", &mut self.std)] {
            if let Some(value) = metadata.get(key) {
                let parts: Result<Vec<f32>, _> = value.split(',').map(|p| p.trim().parse::<f32>()).collect();
                *field = parts.ok().and_then(|p| <[f32; 3]>::try_from(p).ok()).ok_or_else(|| bad(key, value, "three comma-separated numbers"))?;
            }
        }
        if let Some(value) = metadata.get("incc.crop_pct") {
            self.crop_pct = value.trim().parse().map_err(|_| bad("incc.crop_pct", value, "a number"))?;
        }
        Ok(self)
    }

    fn check(&self) -> Result<(), RuntimeError> {
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(RuntimeError::Input(format!("crop_pct must be in (0, 1], got {}", self.crop_pct)));
        }
        if self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            return Err(RuntimeError::Input(format!("std must be finite and non-zero, got {:?}", self.std)));
        }
        if self.height == 0 || self.width == 0 {
            return Err(RuntimeError::Input(format!("crop size {}x{} is empty", self.height, self.width)));
        }
        Ok(())
    }
}

/// Reads a PNG or JPEG file and preprocesses it (see [`preprocess`]) into CHW f32.
///
/// # Errors
/// The file is missing or unreadable, not a supported format, or corrupt/truncated; the message
/// names the file.
pub fn load_image(path: &Path, pre: &Preprocess) -> Result<Vec<f32>, RuntimeError> {
    pre.check()?;
    preprocess(&decode(path)?.to_rgb8(), pre)
}

/// Reads and decodes a PNG or JPEG file.
///
/// # Errors
/// As [`load_image`]; also a JPEG cut short (the decoder would fill the missing part with grey),
/// and an image whose pixels would take more memory than `image`'s limit (512 MiB).
pub(crate) fn decode(path: &Path) -> Result<DynamicImage, RuntimeError> {
    let fail = |reason: String| RuntimeError::Image { path: path.to_path_buf(), reason };
    let bytes = read_bounded(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let reader = || {
        let mut reader = ImageReader::new(std::io::Cursor::new(&bytes[..]));
        // As `ImageReader::open`: the extension's format, unless the content says another.
        if let Ok(format) = ImageFormat::from_path(path) {
            reader.set_format(format);
        }
        reader.with_guessed_format().map_err(|e| fail(format!("cannot read it: {e}")))
    };
    let format = reader()?.format().ok_or_else(|| fail("not a recognised image format (incc reads PNG and JPEG)".to_owned()))?;
    if format == ImageFormat::Jpeg && jpeg_end(&bytes) == JpegEnd::Truncated {
        return Err(fail(format!("truncated image file: the JPEG data stops after {} bytes, before its end marker", bytes.len())));
    }
    reader()?.decode().map_err(|e| match e {
        ImageError::Limits(_) => match reader().ok().and_then(|r| r.into_dimensions().ok()) {
            Some((w, h)) => fail(format!("an image of {w} x {h} pixels is larger than incc decodes (512 MiB of pixels)")),
            None => fail(decode_failure(&e)),
        },
        e => fail(decode_failure(&e)),
    })
}

/// Checks an image file's header, without decoding it: a PNG or JPEG whose size can be read.
///
/// # Errors
/// As [`decode`] for what the header shows.
pub(crate) fn check_header(path: &Path) -> Result<(), RuntimeError> {
    let fail = |reason: String| RuntimeError::Image { path: path.to_path_buf(), reason };
    let reader = ImageReader::open(path).and_then(ImageReader::with_guessed_format).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if reader.format().is_none() {
        return Err(fail("not a recognised image format (incc reads PNG and JPEG)".to_owned()));
    }
    reader.into_dimensions().map(drop).map_err(|e| fail(decode_failure(&e)))
}

/// The largest image file read (1 GiB): a larger one is refused before it is read.
const MAX_FILE_BYTES: u64 = 1 << 30;

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!("{len} bytes is more than an image file incc reads ({MAX_FILE_BYTES})")));
    }
    std::fs::read(path)
}

/// What the end of a JPEG file says.
#[derive(Debug, PartialEq)]
enum JpegEnd {
    /// The end-of-image marker is where the segments and the entropy-coded data lead.
    Complete,
    /// The file stops before it.
    Truncated,
    /// The segments do not follow JPEG's layout: the decoder says what is wrong.
    Unknown,
}

/// Walks a JPEG's segments (each a marker with a length) and its entropy-coded scans (which end
/// at the first marker other than a restart or a stuffed 0xFF00) to its end-of-image marker.
fn jpeg_end(bytes: &[u8]) -> JpegEnd {
    const SOI: u8 = 0xd8;
    const EOI: u8 = 0xd9;
    const SOS: u8 = 0xda;
    if bytes.get(..2) != Some(&[0xff, SOI][..]) {
        return JpegEnd::Unknown;
    }
    let mut at = 2;
    loop {
        match bytes.get(at) {
            None => return JpegEnd::Truncated,
            Some(0xff) => {}
            Some(_) => return JpegEnd::Unknown,
        }
        // Fill bytes: any number of 0xFF before the marker.
        while bytes.get(at) == Some(&0xff) {
            at += 1;
        }
        let Some(&marker) = bytes.get(at) else { return JpegEnd::Truncated };
        at += 1;
        match marker {
            EOI => return JpegEnd::Complete,
            // Markers without a length.
            0x01 | 0xd0..=0xd7 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return JpegEnd::Truncated };
        at += len;
        if at > bytes.len() {
            return JpegEnd::Truncated;
        }
        if marker == SOS {
            // The scan's data runs to the next marker that is not a stuffed byte or a restart.
            loop {
                match bytes.get(at..at + 2) {
                    None => return JpegEnd::Truncated,
                    Some(&[0xff, next]) if next != 0x00 && !(0xd0..=0xd7).contains(&next) && next != 0xff => break,
                    _ => at += 1,
                }
            }
        }
    }
}

fn decode_failure(e: &ImageError) -> String {
    match e {
        ImageError::Unsupported(_) => format!("unsupported image ({e}); incc reads PNG and JPEG"),
        ImageError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => format!("truncated image file: {e}"),
        ImageError::Decoding(_) | ImageError::IoError(_) => format!("corrupt or truncated image: {e}"),
        _ => format!("cannot decode it: {e}"),
    }
}

/// The timm evaluation transform on an RGB image: scale (bicubic) so that the image just covers
/// `floor(height / crop_pct)` x `floor(width / crop_pct)` keeping its aspect ratio (for a square
/// crop: the shorter side becomes `floor(size / crop_pct)`, 341 for 299), center-crop to
/// `height` x `width`, then `(pixel / 255 - mean) / std` per channel, CHW.
///
/// # Errors
/// Invalid parameters (crop_pct outside (0, 1], zero std, empty crop).
pub fn preprocess(image: &RgbImage, pre: &Preprocess) -> Result<Vec<f32>, RuntimeError> {
    pre.check()?;
    let crop = resize_center_crop(image, pre.height, pre.width, pre.crop_pct)?;
    let plane = pre.height * pre.width;
    let mut out = vec![0.0f32; 3 * plane];
    for (x, y, pixel) in crop.enumerate_pixels() {
        let at = y as usize * pre.width + x as usize;
        for c in 0..3 {
            out[c * plane + at] = (f32::from(pixel[c]) / 255.0 - pre.mean[c]) / pre.std[c];
        }
    }
    Ok(out)
}

/// The geometry of [`preprocess`] for any 8-bit pixel type (grey training data too): resize so
/// that the image just covers `floor(height / crop_pct)` x `floor(width / crop_pct)`, then
/// center-crop to `height` x `width`. `crop_pct` must be in (0, 1].
///
/// # Errors
/// An empty image, or one too large to resize.
pub(crate) fn resize_center_crop<I, P>(image: &I, height: usize, width: usize, crop_pct: f32) -> Result<ImageBuffer<P, Vec<u8>>, RuntimeError>
where
    I: GenericImageView<Pixel = P>,
    P: Pixel<Subpixel = u8> + 'static,
{
    let (iw, ih) = (u64::from(image.width()), u64::from(image.height()));
    if iw == 0 || ih == 0 {
        return Err(RuntimeError::Input("the image is empty".to_owned()));
    }
    // floor as timm (`math.floor(img_size / crop_pct)`), in f64 so that e.g. 299 / 0.875 is exact.
    let target = |size: usize| (size as f64 / f64::from(crop_pct) + 1e-9).floor() as u64;
    let (th, tw) = (target(height), target(width));
    // The binding side gets its target exactly; the other is scaled with it and truncated, as
    // torchvision's Resize(int) does. Both end up >= the crop because crop_pct <= 1.
    let (nw, nh) = if ih * tw >= iw * th { (tw, ih * tw / iw) } else { (iw * th / ih, th) };
    let (nw, nh) = (to_u32(nw)?, to_u32(nh)?);
    let (ch, cw) = (to_u32(height as u64)?, to_u32(width as u64)?);
    let (top, left) = (center_offset(nh, ch), center_offset(nw, cw));
    // PIL's BICUBIC (timm's interpolation for Inception) is Catmull-Rom, antialiased when shrinking;
    // `resize` to the same size is a plain copy.
    let resized = imageops::resize(image, nw, nh, FilterType::CatmullRom);
    Ok(imageops::crop_imm(&resized, left, top, cw, ch).to_image())
}

fn to_u32(n: u64) -> Result<u32, RuntimeError> {
    u32::try_from(n).map_err(|_| RuntimeError::Input(format!("image size {n} is too large")))
}

/// torchvision's CenterCrop offset: `int(round((size - crop) / 2))`, Python rounding half to even.
fn center_offset(size: u32, crop: u32) -> u32 {
    let diff = size - crop;
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// A deterministic pseudo-random NCHW batch for `seed`: standard normal values, like the
/// `torch.randn` inputs the reference models were checked with and about the spread of
/// normalised real images (mean 0, std about 1; never beyond +-5.8). Uniform noise in [-1, 1)
/// would not do: a network whose batch-norm statistics were calibrated on such inputs (the
/// random-weight timm references) answers low-variance input with logits in the thousands.
///
/// # Errors
/// A batch too large to make (see [`super::tensor::checked_len`]).
pub fn synthetic_batch(shape: [usize; 4], seed: u64) -> Result<Vec<f32>, RuntimeError> {
    let mut rng = SplitMix64::new(seed);
    // The top 53 bits, as a float in (0, 1]: never 0, so the logarithm below is finite.
    let mut uniform = || ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let mut out = super::tensor::zeros("a synthetic batch", &shape)?;
    for pair in out.chunks_mut(2) {
        // Box-Muller: two uniforms make two independent normals.
        let (r, angle) = ((-2.0 * uniform().ln()).sqrt(), std::f64::consts::TAU * uniform());
        for (v, normal) in pair.iter_mut().zip([r * angle.cos(), r * angle.sin()]) {
            *v = normal as f32;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const RED: Rgb<u8> = Rgb([255, 0, 0]);
    const BLUE: Rgb<u8> = Rgb([0, 0, 255]);

    /// Normalises with mean 0.5 and std 0.25, so 0 -> -2 and 255 -> 2 exactly.
    fn pre(height: usize, width: usize, crop_pct: f32) -> Preprocess {
        Preprocess { height, width, crop_pct, mean: [0.5; 3], std: [0.25; 3] }
    }

    fn temp_file(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("incc-images-{}-{name}", std::process::id()))
    }

    #[test]
    fn crop_and_normalise_exact_without_resize() {
        // 8x4, left half red, right half blue; crop_pct 1 keeps the size, the 4x4 center crop is
        // columns 2..6: two red columns, then two blue ones.
        let image = RgbImage::from_fn(8, 4, |x, _| if x < 4 { RED } else { BLUE });
        let out = preprocess(&image, &pre(4, 4, 1.0)).unwrap();
        let row_r = [2.0, 2.0, -2.0, -2.0];
        let row_g = [-2.0; 4];
        let row_b = [-2.0, -2.0, 2.0, 2.0];
        let expected: Vec<f32> = [row_r, row_g, row_b].iter().flat_map(|row| row.repeat(4)).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn png_file_resized_cropped_and_normalised() {
        // A 2-colour PNG, 48x16: columns 16..32 blue, the rest red. crop 4x4 at crop_pct 0.5 ->
        // shorter side 8 -> 24x8 -> crop columns 10..14, rows 2..6, whose bicubic footprint
        // (source columns 17..31) lies inside the blue band: exactly blue after resampling.
        let path = temp_file("two-colour.png");
        RgbImage::from_fn(48, 16, |x, _| if (16..32).contains(&x) { BLUE } else { RED }).save(&path).unwrap();
        let out = load_image(&path, &pre(4, 4, 0.5)).unwrap();
        std::fs::remove_file(&path).unwrap();
        let expected: Vec<f32> = [-2.0f32, -2.0, 2.0].iter().flat_map(|&v| [v; 16]).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn resize_keeps_aspect_and_floors_like_timm() {
        // 299 / 0.875 = 341.7 -> 341 on the shorter side; 400x300 -> 454x341 (454.6 truncated).
        let image = RgbImage::from_pixel(400, 300, RED);
        let out = preprocess(&image, &Preprocess::new(299, 299)).unwrap();
        assert_eq!(out.len(), 3 * 299 * 299);
        assert!(out[..299 * 299].iter().all(|&v| v == 1.0), "red is 1 after Inception normalisation");
        assert!(out[299 * 299..].iter().all(|&v| v == -1.0));
        assert_eq!((center_offset(341, 299), center_offset(454, 299)), (21, 78)); // 77.5 -> 78
        assert_eq!(center_offset(10, 5), 2); // 2.5 -> 2, half to even
    }

    #[test]
    fn truncated_png_is_a_clear_error() {
        let path = temp_file("truncated.png");
        let mut bytes = Vec::new();
        RgbImage::from_fn(32, 32, |x, y| Rgb([x as u8 * 8, y as u8 * 8, 0])).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_image(&path, &pre(4, 4, 1.0)).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn a_jpeg_cut_short_anywhere_is_an_error_and_trailing_bytes_are_not() {
        let mut bytes = Vec::new();
        let image = RgbImage::from_fn(64, 48, |x, y| Rgb([x as u8 * 4, y as u8 * 5, (x ^ y) as u8]));
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        assert_eq!(jpeg_end(&bytes), JpegEnd::Complete);
        let path = temp_file("cut.jpg");
        for cut in [bytes.len() / 2, bytes.len() - 2, bytes.len() - 1, 200] {
            assert_eq!(jpeg_end(&bytes[..cut]), JpegEnd::Truncated, "cut at {cut}");
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = load_image(&path, &pre(4, 4, 1.0)).unwrap_err().to_string();
            assert!(err.contains("cut.jpg") && err.contains("truncated"), "cut at {cut}: {err}");
        }
        // Some cameras append data after the end marker: the image is whole.
        std::fs::write(&path, [&bytes[..], b"trailing"].concat()).unwrap();
        assert!(load_image(&path, &pre(4, 4, 1.0)).is_ok());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_image_too_large_to_decode_is_refused_naming_its_size() {
        // A PNG whose header says 100000 x 100000 RGB (30 GB of pixels).
        let chunk = |kind: &[u8], data: &[u8]| {
            let body = [kind, data].concat();
            [&(data.len() as u32).to_be_bytes()[..], &body, &crc32fast::hash(&body).to_be_bytes()].concat()
        };
        let header = [&100_000u32.to_be_bytes()[..], &100_000u32.to_be_bytes(), &[8, 2, 0, 0, 0]].concat();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut zlib, &[0; 100]).unwrap();
        let data = zlib.finish().unwrap();
        let png = [&b"\x89PNG\r\n\x1a\n"[..], &chunk(b"IHDR", &header), &chunk(b"IDAT", &data), &chunk(b"IEND", &[])].concat();
        let path = temp_file("huge.png");
        std::fs::write(&path, png).unwrap();
        let err = load_image(&path, &pre(4, 4, 1.0)).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("an image of 100000 x 100000 pixels is larger than incc decodes"), "{err}");
    }

    #[test]
    fn unsupported_unknown_corrupt_and_missing_files_are_clear_errors() {
        let cases = [
            // GIF is recognised by its signature but not compiled in.
            ("anim.gif", &b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"[..], "unsupported image"),
            ("notes.txt", b"hello, this is text", "not a recognised image format (incc reads PNG and JPEG)"),
            // The extension says PNG, the content does not.
            ("fake.png", b"hello, this is text", "corrupt or truncated image"),
        ];
        for (name, bytes, want) in cases {
            let path = temp_file(name);
            std::fs::write(&path, bytes).unwrap();
            let err = load_image(&path, &pre(4, 4, 1.0)).unwrap_err().to_string();
            std::fs::remove_file(&path).unwrap();
            assert!(err.starts_with(&format!("image {}: ", path.display())) && err.contains(want), "{err}");
        }
        let missing = temp_file("missing.jpg");
        let err = load_image(&missing, &pre(4, 4, 1.0)).unwrap_err().to_string();
        assert!(err.contains("missing.jpg: cannot read it: No such file"), "{err}");
    }

    #[test]
    fn metadata_overrides_defaults() {
        let metadata: BTreeMap<String, String> = [("incc.mean", "0.485, 0.456,0.406"), ("incc.std", "0.229,0.224,0.225"), ("incc.crop_pct", "0.9")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let p = Preprocess::new(299, 299).with_metadata(&metadata).unwrap();
        assert_eq!((p.mean, p.std, p.crop_pct), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 0.9));
        let bad = BTreeMap::from([("incc.std".to_owned(), "0.5,0.5".to_owned())]);
        let err = Preprocess::new(1, 1).with_metadata(&bad).unwrap_err().to_string();
        assert!(err.contains("incc.std"), "{err}");
    }

    #[test]
    fn synthetic_batch_is_deterministic_and_in_range() {
        let a = synthetic_batch([2, 3, 5, 7], 42).unwrap();
        assert_eq!(a.len(), 2 * 3 * 5 * 7);
        assert_eq!(a, synthetic_batch([2, 3, 5, 7], 42).unwrap());
        assert_ne!(a, synthetic_batch([2, 3, 5, 7], 43).unwrap());
        let b = synthetic_batch([4, 3, 64, 64], 7).unwrap();
        let mean = b.iter().sum::<f32>() / b.len() as f32;
        let std = (b.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / b.len() as f32).sqrt();
        assert!(mean.abs() < 0.02 && (std - 1.0).abs() < 0.02, "mean {mean}, std {std}");
        assert!(b.iter().all(|v| v.abs() < 5.8));
        let err = synthetic_batch([1, 3, 100_000, 100_000], 0).unwrap_err().to_string();
        assert!(err.contains("a synthetic batch of 1 x 3 x 100000 x 100000 would hold 30000000000 values"), "{err}");
        assert!(synthetic_batch([usize::MAX, 3, 2, 2], 0).is_err());
    }
}
