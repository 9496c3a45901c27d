//! How closely a student's outputs follow the teacher's on the same views: top-1 and top-5
//! agreement, KL divergence of the softmax outputs, and top-1 agreement by how close the teacher
//! is to a tie.

use super::photos::Views;
use anyhow::Result;
use nnzip_core::Model;
use rayon::prelude::*;

/// The logits of every view (rows of `classes` values), computed on all cores. A graph that ends
/// in a Softmax gives probabilities: they are turned back into logits
/// ([`nnzip_core::OutputKind::logits`]), so the agreement metrics, which softmax what they
/// compare, see the model's own probabilities and not their softmax.
pub fn logits(model: &Model, views: &Views) -> Result<Vec<Vec<f32>>> {
    let kind = model.output_kind();
    views
        .inputs
        .par_iter()
        .map(|x| {
            let out = model.run(x.clone())?;
            let values: Vec<f32> = out
                .cast_to::<f32>()?
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect();
            Ok(kind.logits(&values))
        })
        .collect()
}

/// How well a student's outputs agree with the teacher's, view by view.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    /// Views compared.
    pub views: usize,
    /// Fraction whose top-1 class is the teacher's.
    pub top1: f64,
    /// Fraction where the teacher's top-1 class is among the student's top 5.
    pub top5: f64,
    /// Mean KL divergence KL(teacher ‖ student) of the softmax outputs, in nats.
    pub kl: f64,
    /// Views on which the teacher is confident (top-1 probability ≥ 0.5).
    pub confident_views: usize,
    /// Top-1 agreement on those views (1 when there is none).
    pub confident_top1: f64,
}

/// Teacher probability above which a view counts as confident in [`Agreement`].
pub const CONFIDENT: f64 = 0.5;

/// In f64, unlike the core's `classify::softmax`: a KL divergence of 1e-4 sums a thousand small
/// differences of probabilities.
fn softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Index of the largest value (the first of equals): a view's top-1 class.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// Compares student logits with the teacher's (same views, same order).
pub fn agreement(teacher: &[Vec<f32>], student: &[Vec<f32>]) -> Agreement {
    let n = teacher.len().min(student.len());
    if n == 0 {
        return Agreement::default();
    }
    let (mut top1, mut top5, mut kl) = (0usize, 0usize, 0f64);
    let (mut confident, mut confident_top1) = (0usize, 0usize);
    for (t, s) in teacher.iter().zip(student) {
        let ti = argmax(t);
        let same = argmax(s) == ti;
        if same {
            top1 += 1;
        }
        let above = s.iter().filter(|&&v| v > s[ti]).count();
        if above < 5 {
            top5 += 1;
        }
        let (pt, ps) = (softmax(t), softmax(s));
        if pt[ti] >= CONFIDENT {
            confident += 1;
            confident_top1 += usize::from(same);
        }
        kl += pt
            .iter()
            .zip(&ps)
            .filter(|(p, _)| **p > 0.0)
            .map(|(p, q)| p * (p / q.max(1e-30)).ln())
            .sum::<f64>();
    }
    Agreement {
        views: n,
        top1: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
        kl: kl / n as f64,
        confident_views: confident,
        confident_top1: if confident == 0 {
            1.0
        } else {
            confident_top1 as f64 / confident as f64
        },
    }
}

/// Upper bounds of the bands of [`MarginBands`]: the teacher's top-1 probability minus its
/// top-2 probability, below 1, 5 and 20 points, and the rest.
pub const MARGIN_BANDS: [f64; 4] = [0.01, 0.05, 0.2, 1.0];

/// Top-1 agreement by how close the teacher's view is to a tie: its top-1 probability minus its
/// second (the margin). On a view with a margin of a tenth of a point, the rounding error of
/// binary16 weights already moves the logits enough to swap the two classes; a compressed
/// model's disagreements there say little, those at wide margins say a lot.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarginBands {
    /// One band per entry of [`MARGIN_BANDS`], narrowest margins first.
    pub bands: Vec<MarginBand>,
}

/// One band of [`MarginBands`].
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MarginBand {
    /// Smallest teacher margin in the band (probability, inclusive).
    pub from: f64,
    /// Largest (exclusive; 1 is inclusive).
    pub to: f64,
    /// Views whose teacher margin falls in the band.
    pub views: usize,
    /// Of those, views whose top-1 class is the teacher's.
    pub agree: usize,
    /// Of those, views where the teacher's class is among the student's first five.
    pub top5: usize,
}

impl MarginBand {
    /// Fraction of the band's views that agree (1 for an empty band).
    pub fn top1(&self) -> f64 {
        if self.views == 0 {
            1.0
        } else {
            self.agree as f64 / self.views as f64
        }
    }
}

/// The teacher's top-1 probability minus its top-2 probability on one view.
pub fn teacher_margin(teacher: &[f32]) -> f64 {
    let p = softmax(teacher);
    let (mut first, mut second) = (0f64, 0f64);
    for &v in &p {
        if v > first {
            second = first;
            first = v;
        } else if v > second {
            second = v;
        }
    }
    first - second
}

/// Top-1 agreement of `student` with `teacher` (same views, same order) by the teacher's margin.
pub fn margin_bands(teacher: &[Vec<f32>], student: &[Vec<f32>]) -> MarginBands {
    let mut from = 0.0;
    let mut bands: Vec<MarginBand> = MARGIN_BANDS
        .iter()
        .map(|&to| {
            let b = MarginBand {
                from,
                to,
                ..MarginBand::default()
            };
            from = to;
            b
        })
        .collect();
    for (t, s) in teacher.iter().zip(student) {
        let m = teacher_margin(t);
        let i = MARGIN_BANDS
            .iter()
            .position(|&to| m < to)
            .unwrap_or(MARGIN_BANDS.len() - 1);
        let ti = argmax(t);
        bands[i].views += 1;
        bands[i].agree += usize::from(argmax(s) == ti);
        bands[i].top5 += usize::from(s.iter().filter(|&&v| v > s[ti]).count() < 5);
    }
    MarginBands { bands }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::label_free::student::binary16_weights;
    use nnzip_core::graph::Weight;

    #[test]
    fn agreement_counts_top1_top5_and_kl() {
        let teacher = vec![vec![3.0, 1.0, 0.0], vec![0.0, 2.0, 1.0]];
        let same = agreement(&teacher, &teacher);
        assert_eq!((same.top1, same.top5), (1.0, 1.0));
        assert!(same.kl.abs() < 1e-12);
        let student = vec![vec![1.0, 3.0, 0.0], vec![0.0, 2.0, 1.0]];
        let a = agreement(&teacher, &student);
        assert_eq!(a.top1, 0.5);
        assert_eq!(a.top5, 1.0, "3 classes: always within the top 5");
        // Both teacher views are confident (top-1 probabilities 0.84 and 0.67); one agrees.
        assert_eq!((a.confident_views, a.confident_top1), (2, 0.5));
        let unsure = agreement(&[vec![0.1, 0.0, 0.0]], &[vec![0.0, 0.1, 0.0]]);
        assert_eq!((unsure.confident_views, unsure.confident_top1), (0, 1.0));
        assert!(a.kl > 0.1);
    }

    #[test]
    fn margin_bands_sort_views_by_how_close_the_teacher_is_to_a_tie() {
        // Margins (top-1 − top-2 probability): a near tie, ~3 points, ~46 points, a sure view.
        let teacher = vec![
            vec![1.0, 0.999, -5.0],
            vec![1.0, 0.9, -5.0],
            vec![2.0, 1.0, -5.0],
            vec![9.0, 0.0, 0.0],
        ];
        let m: Vec<f64> = teacher.iter().map(|t| teacher_margin(t)).collect();
        assert!(m[0] < 0.01 && (0.01..0.05).contains(&m[1]), "{m:?}");
        assert!((0.2..1.0).contains(&m[2]) && m[3] > 0.99, "{m:?}");
        // The student swaps the near tie and the third view's classes.
        let mut student = teacher.clone();
        student[0].swap(0, 1);
        student[2].swap(0, 1);
        let b = margin_bands(&teacher, &student);
        let got: Vec<(usize, usize, usize)> =
            b.bands.iter().map(|b| (b.views, b.agree, b.top5)).collect();
        assert_eq!(
            got,
            [(1, 0, 1), (1, 1, 1), (0, 0, 0), (2, 1, 2)],
            "3 classes: all top-5"
        );
        assert_eq!((b.bands[0].from, b.bands[3].to), (0.0, 1.0));
        assert_eq!(b.bands[2].top1(), 1.0, "an empty band");
        // Binary16 rounding moves weights by at most 2^-11 of their size.
        let w = Weight {
            name: "w".into(),
            shape: vec![3],
            values: vec![0.1, -3.3, 1e-3],
        };
        let r = &binary16_weights(std::slice::from_ref(&w))["w"];
        for (a, b) in r.iter().zip(&w.values) {
            assert!((a - b).abs() <= b.abs() / 2048.0, "{a} vs {b}");
        }
    }
}
