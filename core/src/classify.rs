//! Turning a classifier's outputs into ranked, labelled probabilities: logits are softmaxed,
//! probabilities taken as they are, log-probabilities exponentiated ([`OutputKind`]).

/// One class of a classification result.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index in the model's output vector.
    pub index: usize,
    /// Class name from the file's labels, or `class N` when the file has none.
    pub label: String,
    /// The model's probability of the class, 0–1: its output itself when the graph ends in a
    /// softmax, the softmax of its logits otherwise.
    pub probability: f32,
}

/// What the values a classifier outputs are, as its graph says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputKind {
    /// Unnormalised scores: the probabilities are their softmax.
    #[default]
    Logits,
    /// Already probabilities (the graph ends in a Softmax over the classes).
    Probabilities,
    /// Natural logarithms of probabilities (the graph ends in a LogSoftmax over the classes).
    LogProbabilities,
}

impl OutputKind {
    /// The class probabilities these output values stand for.
    pub fn probabilities(self, values: &[f32]) -> Vec<f32> {
        match self {
            OutputKind::Logits => softmax(values),
            OutputKind::Probabilities => values.to_vec(),
            OutputKind::LogProbabilities => values.iter().map(|v| v.exp()).collect(),
        }
    }

    /// Logits standing for these output values: values whose softmax gives the same
    /// probabilities, for code that compares models through the softmax of their outputs.
    /// Probabilities become their logarithms (a zero the logarithm of the smallest normal f32,
    /// so that no infinity enters later arithmetic); log-probabilities are logits already.
    pub fn logits(self, values: &[f32]) -> Vec<f32> {
        match self {
            OutputKind::Logits | OutputKind::LogProbabilities => values.to_vec(),
            OutputKind::Probabilities => values
                .iter()
                .map(|p| p.max(f32::MIN_POSITIVE).ln())
                .collect(),
        }
    }
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
    top_k_of(OutputKind::Logits, logits, k, labels)
}

/// The `k` most probable classes of a model's output `values` of the given kind, most probable
/// first (ties by lower index).
pub fn top_k_of(kind: OutputKind, values: &[f32], k: usize, labels: &[String]) -> Vec<Prediction> {
    let probs = kind.probabilities(values);
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
    fn logits_of_each_kind_softmax_back_to_its_probabilities() {
        let p = [0.7f32, 0.2, 0.1, 0.0];
        let back = softmax(&OutputKind::Probabilities.logits(&p));
        for (a, b) in p.iter().zip(&back) {
            assert!((a - b).abs() < 1e-6, "{p:?} -> {back:?}");
        }
        let log_p: Vec<f32> = [0.5f32, 0.25, 0.25].iter().map(|v| v.ln()).collect();
        let back = softmax(&OutputKind::LogProbabilities.logits(&log_p));
        assert!((back[0] - 0.5).abs() < 1e-6 && (back[2] - 0.25).abs() < 1e-6);
        assert_eq!(OutputKind::Logits.logits(&[3.0, -1.0]), vec![3.0, -1.0]);
    }

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

    #[test]
    fn probabilities_are_kept_and_log_probabilities_exponentiated() {
        let probs = [0.7f32, 0.2, 0.1];
        let top = top_k_of(OutputKind::Probabilities, &probs, 3, &[]);
        let got: Vec<(usize, f32)> = top.iter().map(|p| (p.index, p.probability)).collect();
        assert_eq!(got, vec![(0, 0.7), (1, 0.2), (2, 0.1)]);
        let logs: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let top = top_k_of(OutputKind::LogProbabilities, &logs, 1, &[]);
        assert!((top[0].probability - 0.7).abs() < 1e-6, "{top:?}");
        // Softmaxing probabilities again squashes them towards uniform: the defect this avoids.
        let twice = top_k(&probs, 1, &[]);
        assert!(twice[0].probability < 0.5, "{twice:?}");
    }
}
