//! Learning-rate schedules, as functions of the (fractional) epoch, with an optional linear warm-up.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Schedule {
    /// The paper's: x `factor` every `every` epochs (0.94 every 2), stepwise.
    Exponential {
        factor: f64,
        every: f64,
    },
    /// Cosine from the base rate to 0 over the run.
    Cosine,
    /// x `factor` at each of the given epochs.
    Step {
        factor: f64,
        at: Vec<f64>,
    },
    Constant,
}

impl Schedule {
    pub fn paper() -> Schedule {
        Schedule::Exponential { factor: 0.94, every: 2.0 }
    }

    /// `exponential[:FACTOR:EVERY]`, `cosine`, `step:FACTOR:E1,E2,..`, `constant`.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let num = |s: &str| s.trim().parse::<f64>().map_err(|_| format!("schedule `{text}`: `{s}` is not a number"));
        match parts.as_slice() {
            ["exponential" | "paper"] => Ok(Schedule::paper()),
            ["exponential", f, e] => Ok(Schedule::Exponential { factor: num(f)?, every: num(e)? }),
            ["cosine"] => Ok(Schedule::Cosine),
            ["constant"] => Ok(Schedule::Constant),
            ["step", f, at] => Ok(Schedule::Step { factor: num(f)?, at: at.split(',').map(num).collect::<Result<_, _>>()? }),
            _ => Err(format!("unknown schedule `{text}`: expected exponential[:FACTOR:EVERY], cosine, step:FACTOR:E1,E2,... or constant")),
        }
    }

    /// Factors above 0 and epochs at least 0, all finite.
    pub fn check(&self) -> Result<(), String> {
        let (factor, epochs) = match self {
            Schedule::Exponential { factor, every } if !(every.is_finite() && *every > 0.0) => {
                return Err(format!("every {every} epochs: expected a number above 0"))
            }
            Schedule::Exponential { factor, .. } => (*factor, &[][..]),
            Schedule::Step { factor, at } => (*factor, &at[..]),
            Schedule::Cosine | Schedule::Constant => return Ok(()),
        };
        if !(factor.is_finite() && factor > 0.0) {
            return Err(format!("factor {factor}: expected a finite number above 0"));
        }
        match epochs.iter().find(|e| !(e.is_finite() && **e >= 0.0)) {
            Some(e) => Err(format!("epoch {e}: expected a finite number at least 0")),
            None => Ok(()),
        }
    }

    /// The rate at `epoch` (fractional) of a run of `epochs`, from `base`, after `warmup` epochs
    /// of linear warm-up.
    pub fn lr(&self, base: f64, epoch: f64, epochs: f64, warmup: f64) -> f64 {
        let scheduled = match self {
            Schedule::Exponential { factor, every } => base * factor.powf((epoch / every).floor()),
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * (epoch / epochs.max(1e-9)).min(1.0)).cos()),
            Schedule::Step { factor, at } => base * factor.powi(at.iter().filter(|&&e| epoch >= e).count() as i32),
            Schedule::Constant => base,
        };
        if warmup > 0.0 && epoch < warmup {
            scheduled * (epoch / warmup).max(1e-3)
        } else {
            scheduled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let p = Schedule::paper();
        assert_eq!(p.lr(0.045, 1.9, 10.0, 0.0), 0.045);
        assert!((p.lr(0.045, 2.0, 10.0, 0.0) - 0.045 * 0.94).abs() < 1e-12);
        assert!((p.lr(0.045, 5.0, 10.0, 0.0) - 0.045 * 0.94 * 0.94).abs() < 1e-12);
        assert!((Schedule::Cosine.lr(1.0, 5.0, 10.0, 0.0) - 0.5).abs() < 1e-12);
        let s = Schedule::parse("step:0.1:3,6").expect("parses");
        assert_eq!(s.lr(1.0, 6.5, 10.0, 0.0), 0.1f64 * 0.1);
        assert_eq!(Schedule::Constant.lr(1.0, 0.5, 10.0, 1.0), 0.5);
        assert!(Schedule::parse("linear").is_err());
    }
}
