//! Training curves: reads the `metrics.jsonl` of training runs and draws them side by side (loss,
//! and validation top-1 error) on one PNG or SVG figure, one colour per run, so that runs can be
//! compared the way the papers do (a plain network against its residual variant, say).

use crate::fsutil;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One training run: its name (for the legend) and its per-epoch figures, ordered by epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub epochs: Vec<EpochPoint>,
}

/// The figures of one `"kind": "epoch"` line. Accuracies are fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EpochPoint {
    pub epoch: u32,
    /// NaN when the file says `null`: serde_json writes a diverged (NaN) loss as `null`.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub val_top1: Option<f64>,
    pub val_top5: Option<f64>,
    pub lr: f64,
}

fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Why a run could not be read or the figure not drawn. The message names the file concerned.
#[derive(Debug)]
pub enum PlotError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Line `line` (1-based) of `path` is not a valid metrics line.
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    NoEpochs {
        path: PathBuf,
    },
    NoRuns,
    /// The output's extension is neither `.png` nor `.svg`.
    Format {
        path: PathBuf,
    },
    Draw(String),
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Line { path, line, reason } => write!(f, "{}:{line}: {reason}", path.display()),
            Self::NoEpochs { path } => write!(f, "{}: no epoch lines (`\"kind\": \"epoch\"`) yet; has the run finished an epoch?", path.display()),
            Self::NoRuns => f.write_str("no runs to plot"),
            Self::Format { path } => write!(f, "{}: the plot's file name must end in .png or .svg", path.display()),
            Self::Draw(reason) => write!(f, "cannot draw the plot: {reason}"),
            Self::Write { path, source } => write!(f, "cannot write {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PlotError {}

/// Reads `dir/metrics.jsonl`. The run is named after `dir`; set `name` to change that.
/// Lines of kinds other than `epoch` are skipped. When an epoch appears twice (a resumed run
/// redoes the epochs after its last checkpoint), the later line wins. A line cut short (a run
/// being written, or one that crashed in the middle of a line) is skipped, and so are the pieces
/// of one that a resumed run glued to the next (older runs did, before they cut their metrics
/// back on resuming).
pub fn read_run(dir: &Path) -> Result<Run, PlotError> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|source| PlotError::Read { path: path.clone(), source })?;
    let mut epochs = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |reason: String| PlotError::Line { path: path.clone(), line: i + 1, reason };
        let values = objects(line).map_err(|(e, column)| {
            // serde_json's message ends in "at line 1 column N": the line is ours to give.
            let message = e.to_string();
            let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m);
            bad(format!("{message} at column {column}"))
        })?;
        for value in values {
            match value.get("kind").and_then(serde_json::Value::as_str) {
                Some("epoch") => {
                    let point: EpochPoint = serde_json::from_value(value).map_err(|e| bad(format!("epoch line: {e}")))?;
                    for (key, accuracy) in [("val_top1", point.val_top1), ("val_top5", point.val_top5)] {
                        if let Some(a) = accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
                            return Err(bad(format!("{key} is {a}, not a fraction in [0, 1]")));
                        }
                    }
                    epochs.insert(point.epoch, point);
                }
                Some(_) => {}
                None => return Err(bad("no \"kind\" string (expected \"epoch\" or \"step\")".into())),
            }
        }
    }
    if epochs.is_empty() {
        return Err(PlotError::NoEpochs { path });
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| dir.canonicalize().ok()?.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(Run { name, epochs: epochs.into_values().collect() })
}

const SIZE: (u32, u32) = (1200, 500);
const FONT: &str = "sans-serif";
/// Tableau 10 without its grey, which would read as part of the axes.
const COLOURS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Curves this short get a marker on each point: with one or two epochs a line alone shows little.
const MARKED_POINTS: usize = 30;

/// The JSON values on one line of metrics: one, or several glued together, with the pieces of
/// values cut short (a crash in the middle of a write) skipped. Anything else is an error, with
/// its column on the line.
fn objects(line: &str) -> Result<Vec<serde_json::Value>, (serde_json::Error, usize)> {
    let mut found = vec![];
    let mut rest = line.trim_start();
    while !rest.trim_end().is_empty() {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
        match values.next() {
            Some(Ok(value)) => {
                found.push(value);
                rest = &rest[values.byte_offset()..];
            }
            Some(Err(e)) => {
                // A piece cut short stops where the next value starts, or at the line's end; its
                // text is then the start of a valid value.
                let next = rest[1..].find("{\"").map_or(rest.len(), |i| i + 1);
                match serde_json::from_str::<serde_json::Value>(&rest[..next]) {
                    Err(cut) if cut.is_eof() => rest = &rest[next..],
                    _ => {
                        let column = line.len() - rest.len() + e.column();
                        return Err((e, column));
                    }
                }
            }
            None => break,
        }
        rest = rest.trim_start();
    }
    Ok(found)
}

/// Draws `runs` into `out`, a `.png` or `.svg` file (written atomically): training loss (solid)
/// and validation loss (dashed) against epoch on the left, validation top-1 error in % on the right.
pub fn plot(runs: &[Run], out: &Path) -> Result<(), PlotError> {
    let extension = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !matches!(extension.as_deref(), Some("png" | "svg")) {
        return Err(PlotError::Format { path: out.to_path_buf() });
    }
    if runs.is_empty() {
        return Err(PlotError::NoRuns);
    }
    register_font();
    let bytes = if extension.as_deref() == Some("svg") {
        let mut svg = String::new();
        draw(SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(), runs)?;
        svg.into_bytes()
    } else {
        let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
        draw(BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area(), runs)?;
        let mut png = Vec::new();
        image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut png), &rgb, SIZE.0, SIZE.1, image::ExtendedColorType::Rgb8)
            .map_err(|e| PlotError::Draw(format!("PNG encoding: {e}")))?;
        png
    };
    fsutil::write_atomic(out, &bytes).map_err(|source| PlotError::Write { path: out.to_path_buf(), source })
}

/// With `ab_glyph`, plotters has no font until one is registered (it also needs one to lay out
/// SVG text); the embedded one keeps the output the same on every machine.
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let registered = plotters::style::register_font(FONT, FontStyle::Normal, include_bytes!("../assets/fonts/DejaVuSans.ttf"));
        assert!(registered.is_ok(), "the embedded font is a valid TrueType font");
    });
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, runs: &[Run]) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| PlotError::Draw(e.to_string());
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled("Training curves", (FONT, 26)).map_err(err)?;
    let (left, right) = body.split_horizontally(SIZE.0 / 2);
    let epochs = || runs.iter().flat_map(|r| r.epochs.iter().map(|p| p.epoch as i32));
    let (first, last) = (epochs().min().unwrap_or(0), epochs().max().unwrap_or(1));
    // A single epoch would give an empty range, which plotters cannot map.
    let x = if first < last { first..last } else { first - 1..last + 1 };
    // The top of a panel, or `empty` when none of its curves has a point.
    let top = |fields: &[Field], empty: f64| {
        let max = runs.iter().flat_map(|r| fields.iter().flat_map(|&f| curve(r, f))).map(|(_, v)| v).fold(0.0, f64::max);
        if max > 0.0 {
            max * 1.05
        } else {
            empty
        }
    };

    // One diverging run would squash the others flat: losses over 1.5 times the largest first-epoch
    // training loss go off the top (plotters clamps the points to the panel's edge).
    let ceiling = 1.5 * runs.iter().filter_map(|r| Some(curve(r, TRAIN_LOSS).first()?.1)).fold(0.0, f64::max);
    let loss_top = top(&[TRAIN_LOSS, VAL_LOSS], 1.0);
    let loss_top = if ceiling > 0.0 { loss_top.min(ceiling) } else { loss_top };
    let mut loss = chart(&left, "Loss", x.clone(), loss_top, "loss").map_err(err)?;
    let mut error = chart(&right, "Validation top-1 error", x, top(&[VAL_ERROR], 100.0).min(100.0), "top-1 error (%)").map_err(err)?;
    for (run, &colour) in runs.iter().zip(COLOURS.iter().cycle()) {
        draw_curve(&mut loss, curve(run, TRAIN_LOSS), colour, false, format!("{} train", run.name)).map_err(err)?;
        let val = curve(run, VAL_LOSS);
        if !val.is_empty() {
            draw_curve(&mut loss, val, colour, true, format!("{} validation", run.name)).map_err(err)?;
        }
        draw_curve(&mut error, curve(run, VAL_ERROR), colour, false, run.name.clone()).map_err(err)?;
    }
    legend(&mut loss).map_err(err)?;
    legend(&mut error).map_err(err)?;
    root.present().map_err(err)
}

/// What a curve shows of each epoch.
type Field = fn(&EpochPoint) -> Option<f64>;
const TRAIN_LOSS: Field = |p| Some(p.train_loss);
const VAL_LOSS: Field = |p| p.val_loss;
const VAL_ERROR: Field = |p| p.val_top1.map(|a| 100.0 * (1.0 - a));

/// `(epoch, field)` of the epochs that have the field, skipping NaN (a diverged loss).
fn curve(run: &Run, field: Field) -> Vec<(i32, f64)> {
    run.epochs.iter().filter_map(|p| Some((p.epoch as i32, field(p)?))).filter(|(_, v)| v.is_finite()).collect()
}

fn draw_curve<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: Vec<(i32, f64)>,
    colour: RGBColor,
    dashed: bool,
    label: String,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = colour.stroke_width(2);
    if points.len() <= MARKED_POINTS {
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    let series = if dashed { chart.draw_series(DashedLineSeries::new(points, 6, 4, style))? } else { chart.draw_series(LineSeries::new(points, style))? };
    series.label(label).legend(move |(x, y)| {
        let ends = [(x, y), (x + 24, y)];
        if dashed {
            DashedPathElement::new(ends, 6, 4, style).into_dyn()
        } else {
            PathElement::new(ends, style).into_dyn()
        }
    });
    Ok(())
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordi32, plotters::coord::types::RangedCoordf64>>;

/// One panel's axes: epochs across, `0..top` up.
fn chart<'a, DB: DrawingBackend + 'a>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x: std::ops::Range<i32>,
    top: f64,
    y_desc: &str,
) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart =
        ChartBuilder::on(area).caption(caption, (FONT, 20)).margin(12).x_label_area_size(45).y_label_area_size(60).build_cartesian_2d(x, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(WHITE)
        .draw()?;
    Ok(chart)
}

/// Rust's shortest form ("10", "0.5", not plotters' "10.0"), rounded first so that the sums
/// behind the tick positions do not show as "0.30000000000000004".
fn tick(v: f64) -> String {
    format!("{}", (v * 1e6).round() / 1e6)
}

fn legend<'a, DB: DrawingBackend + 'a>(chart: &mut Chart<'a, DB>) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
}
