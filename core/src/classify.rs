//! Turning logits into ranked, labelled probabilities.

/// One class of a classification result.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index in the model's output vector.
    pub index: usize,
    /// Class name from the file's labels, or `class N` when the file has none.
    pub label: String,
    /// Softmax probability, 0–1.
    pub probability: f32,
}

/// Numerically stable softmax (subtracts the maximum first). Non-finite logits give non-finite
/// probabilities rather than a panic.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes of `logits`, most probable first (ties by lower index).
pub fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<Prediction> {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| Prediction {
            index,
            label: labels
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("class {index}")),
            probability: probs[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
        // Huge logits do not overflow.
        let p = softmax(&[1.0, 1000.0]);
        assert!(p[1] > 0.999 && p[0].is_finite());
    }

    #[test]
    fn top_k_sorts_and_labels() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let top = top_k(&[0.5, 2.0, 1.0], 2, &labels);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].index, top[0].label.as_str()), (1, "b"));
        assert_eq!((top[1].index, top[1].label.as_str()), (2, "class 2"));
        assert!(top[0].probability > top[1].probability);
        assert_eq!(top_k(&[1.0], 5, &[]).len(), 1);
    }
}
