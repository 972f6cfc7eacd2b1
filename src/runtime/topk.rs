//! Softmax and top-k classes per example, and optional class labels.

use std::path::Path;

use super::error::RuntimeError;

/// Softmax of one example's logits (computed in f64, shifted by the maximum for stability).
#[must_use]
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|&e| (e / sum) as f32).collect()
}

/// The `k` most probable classes of each example, as (class index, probability), most probable
/// first (ties: lower index first). `shape` is the logits' shape: the first dimension is the
/// batch, the rest are flattened into classes (so `[N, 1000]` and `[N, 1000, 1, 1]` both work).
///
/// # Errors
/// An empty shape or batch, or `logits` not matching `shape`.
pub fn top_k(logits: &[f32], shape: &[usize], k: usize) -> Result<Vec<Vec<(usize, f32)>>, RuntimeError> {
    let (&batch, rest) = shape.split_first().ok_or_else(|| RuntimeError::Input("top-k needs logits with a batch dimension".to_owned()))?;
    let classes: usize = rest.iter().product();
    if batch == 0 || classes == 0 || logits.len() != batch * classes {
        return Err(RuntimeError::Input(format!("top-k: {} logits do not make a batch of shape {shape:?}", logits.len())));
    }
    Ok(logits
        .chunks(classes)
        .map(|example| {
            let mut ranked: Vec<(usize, f32)> = softmax(example).into_iter().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            ranked.truncate(k);
            ranked
        })
        .collect())
}

/// Reads class labels, one per line (trailing blank lines ignored), and checks that there is one
/// per class.
///
/// # Errors
/// The file cannot be read, or holds a different number of labels than `classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<String>, RuntimeError> {
    let fail = |reason: String| RuntimeError::File { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the labels file: {e}")))?;
    let mut labels: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
    while labels.last().is_some_and(String::is_empty) {
        labels.pop();
    }
    if labels.len() != classes {
        return Err(fail(format!("has {} labels, but the model has {classes} classes", labels.len())));
    }
    Ok(labels)
}

/// The label of `class`, or its index when there are no labels (ImageNet's are not shipped).
#[must_use]
pub fn class_name(labels: Option<&[String]>, class: usize) -> String {
    labels.and_then(|l| l.get(class)).cloned().unwrap_or_else(|| class.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_by_hand() {
        // logits ln 1, ln 2, ln 3, ln 4 -> probabilities 0.1, 0.2, 0.3, 0.4
        let p = softmax(&[0.0, 2f32.ln(), 3f32.ln(), 4f32.ln()]);
        for (got, want) in p.iter().zip([0.1, 0.2, 0.3, 0.4]) {
            assert!((got - want).abs() < 1e-6, "{p:?}");
        }
        // Large logits do not overflow.
        let p = softmax(&[1000.0, 1000.0]);
        assert_eq!(p, vec![0.5, 0.5]);
    }

    #[test]
    fn top_k_per_example() {
        let logits = [
            0.0,
            2f32.ln(),
            3f32.ln(),
            4f32.ln(), // example 0: 3, 2, 1, 0
            5.0,
            1.0,
            5.0,
            -1.0, // example 1: tie between 0 and 2
        ];
        let top = top_k(&logits, &[2, 4], 2).unwrap();
        assert_eq!(top[0].iter().map(|t| t.0).collect::<Vec<_>>(), vec![3, 2]);
        assert!((top[0][0].1 - 0.4).abs() < 1e-6 && (top[0][1].1 - 0.3).abs() < 1e-6);
        assert_eq!(top[1].iter().map(|t| t.0).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(top[1][0].1, top[1][1].1);
        // k larger than the classes gives them all; trailing 1x1 dims are flattened.
        assert_eq!(top_k(&logits, &[2, 4, 1, 1], 10).unwrap()[1].len(), 4);
        assert!(top_k(&logits, &[3, 4], 1).is_err());
        assert!(top_k(&logits, &[], 1).is_err());
    }

    #[test]
    fn labels_optional() {
        let path = std::env::temp_dir().join(format!("incc-labels-{}.txt", std::process::id()));
        std::fs::write(&path, "cat\ndog \nbird\n\n").unwrap();
        let labels = read_labels(&path, 3).unwrap();
        let err = read_labels(&path, 4).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(labels, ["cat", "dog", "bird"]);
        assert!(err.contains("has 3 labels, but the model has 4 classes"), "{err}");
        assert_eq!(class_name(Some(&labels), 1), "dog");
        assert_eq!(class_name(None, 1), "1");
    }
}
