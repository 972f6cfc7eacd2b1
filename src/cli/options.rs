//! The options every compiling command shares (the file, `--set`, `--input`, `--residualize`,
//! `--fold-bn`) and the one place they become a compilation's settings and pass options.

use incc::driver::{Compiled, Options};
use incc::Error;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Common {
    /// The `.inc` file to compile.
    pub file: PathBuf,
    /// Which network, when the file defines several.
    #[arg(long)]
    pub network: Option<String>,
    /// Set a network parameter: `--set classes=10` (repeatable, or comma-separated).
    #[arg(long = "set", value_name = "NAME=VALUE", value_delimiter = ',', value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Replace the input size: `--input 3x149x149` (CxHxW). For `incc run`, an image file instead.
    #[arg(long, value_name = "CxHxW", value_parser = parse_input)]
    pub input: Option<InputArg>,
    /// Turn every eligible Inception block into its residual twin: `scale=0.1` and/or `BLOCK=SCALE`.
    #[arg(long, value_name = "SPEC")]
    pub residualize: Option<String>,
    /// Fold batch norm into the preceding convs (inference).
    #[arg(long)]
    pub fold_bn: bool,
}

/// `KEY=VALUE` (`--set`, `--cuda-option`), both sides trimmed.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A count of at least 1 (`--batch`, `--epochs`, `--workers`, ...).
pub fn count<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialEq + From<u8>,
    T::Err: std::fmt::Display,
{
    match s.trim().parse::<T>() {
        Ok(n) if n == T::from(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A number of seconds, at least 0, that a duration can hold.
pub fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if std::time::Duration::try_from_secs_f64(v).is_ok() => Ok(v),
        Ok(v) => Err(format!("must be a finite number of seconds, at least 0, not {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `--input`: a size (`3x149x149`) or, for `incc run`, an image to classify.
#[derive(Clone, Debug)]
pub enum InputArg {
    Dims(Vec<usize>),
    Image(PathBuf),
}

fn parse_input(s: &str) -> Result<InputArg, String> {
    let looks_like_dims = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == 'x');
    if !looks_like_dims {
        return Ok(InputArg::Image(PathBuf::from(s)));
    }
    let dims: Result<Vec<usize>, _> = s.split('x').map(|d| d.parse::<usize>()).collect();
    match dims {
        Ok(d) if d.len() == 3 && d.iter().all(|&v| v > 0) => Ok(InputArg::Dims(d)),
        _ => Err(format!("expected CxHxW with positive sizes, as in 3x299x299; found `{s}`")),
    }
}

impl Common {
    /// What to compile besides the file; an image given to `--input` is a usage error here (it is
    /// for `incc run`, which takes it out first).
    pub fn options(&self) -> Result<Options, Error> {
        let input = match &self.input {
            None => None,
            Some(InputArg::Dims(d)) => Some(d.clone()),
            Some(InputArg::Image(p)) => {
                return Err(Error::Usage(format!("--input {}: expected CxHxW, as in 3x299x299 (images are for `incc run`)", p.display())))
            }
        };
        Ok(Options { network: self.network.clone(), set: self.set.clone(), input, residualize: self.residualize.clone(), fold_bn: self.fold_bn })
    }

    /// Compiles the file (up to the pass `stop_after`), printing the warnings.
    pub fn compile(&self, stop_after: Option<&str>) -> Result<Compiled, Error> {
        let compiled = self.options()?.compile(&self.file, stop_after)?;
        print_warnings(&compiled);
        Ok(compiled)
    }
}

/// The compilation's warnings (blocks `--residualize` left as they are), rendered, on stderr.
pub fn print_warnings(compiled: &Compiled) {
    for w in &compiled.warnings {
        eprint!("{}", w.render(&compiled.sources));
    }
}
