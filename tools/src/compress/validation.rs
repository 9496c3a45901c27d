//! The images the labelled pipeline decides on, apart from the images it reports on.
//!
//! Choosing densities for `--max-accuracy-drop` and rolling back a stage that lowered accuracy
//! are decisions: measured on the images a figure is then reported on, they tune the figure.
//! So a fixed part of the test split is held apart for them, and every accuracy reported as the
//! result comes from the rest. The part comes from the test split rather than the training
//! split because the reference models were trained on every training image: none of those is
//! unseen, and a model judged on images it learnt looks better than it is.

use crate::data::Dataset;
use anyhow::{Result, ensure};

/// Share of the test split held apart for decisions (2,000 of Fashion-MNIST's 10,000): enough
/// to tell a budget level of tenths of a point from the one before (the levels are compared on
/// the same images), while 8,000 images stay for the reported figure.
pub const VALIDATION_SHARE: f64 = 0.2;

/// The shuffle that picks the validation images. Fixed, not `--seed`: runs with different seeds
/// then report on the same images, and their figures can be compared.
const VALIDATION_SEED: u64 = 0x0da7_a5e7;

/// The test split in two parts that share no image.
pub struct DecisionSplit {
    /// What decisions are measured on: budget levels, rollbacks, the stage table.
    pub validation: Dataset,
    /// What the reported accuracy (before and after, and the file's metadata) is measured on.
    pub reported: Dataset,
}

impl DecisionSplit {
    /// Holds [`VALIDATION_SHARE`] of `test` apart, the same images on every run.
    pub fn of_test(test: &Dataset) -> Result<Self> {
        ensure!(
            test.len() >= 2,
            "{}: the test split has {} image(s); at least 2 are needed, one to decide on and one \
             to report on",
            test.source,
            test.len()
        );
        let (mut reported, mut validation) =
            test.split_validation(VALIDATION_SHARE, VALIDATION_SEED)?;
        // With very few images the rounding could leave one side empty.
        if validation.is_empty() || reported.is_empty() {
            let (r, v) = test.split_validation(0.5, VALIDATION_SEED)?;
            (reported, validation) = (r, v);
        }
        let (v, r) = (validation.len(), reported.len());
        validation.source = format!("{} (validation: {v} test images held apart)", test.source);
        reported.source = format!("{} (the other {r} test images)", test.source);
        Ok(DecisionSplit {
            validation,
            reported,
        })
    }

    /// One line for the report: which images each figure comes from.
    pub fn describe(&self) -> String {
        format!(
            "decisions (budget levels, rollbacks) and the stage table: {} validation images, a \
             fixed {:.0}% of the test split; accuracy before → after: the other {} test images",
            self.validation.len(),
            VALIDATION_SHARE * 100.0,
            self.reported.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test split whose image `i` holds the value `i`, so parts can be traced back.
    fn numbered(n: usize) -> Dataset {
        Dataset {
            source: "numbered".into(),
            images: (0..n).map(|i| i as f32).collect(),
            labels: (0..n as u32).map(|i| i % 10).collect(),
            sample_shape: [1, 1, 1],
            class_names: Vec::new(),
        }
    }

    #[test]
    fn the_parts_share_no_image_and_cover_the_split() {
        let split = DecisionSplit::of_test(&numbered(10_000)).unwrap();
        assert_eq!(split.validation.len(), 2_000);
        assert_eq!(split.reported.len(), 8_000);
        let mut all: Vec<f32> = split
            .validation
            .images
            .iter()
            .chain(&split.reported.images)
            .copied()
            .collect();
        all.sort_by(f32::total_cmp);
        assert!(all.iter().enumerate().all(|(i, &v)| v == i as f32));
        // Shuffled, not the first fifth.
        assert!(split.validation.images.iter().any(|&v| v >= 2_000.0));
        assert!(split.describe().contains("2000 validation images"));
        assert!(split.reported.source.contains("the other 8000 test images"));
    }

    #[test]
    fn the_same_images_are_held_apart_on_every_run() {
        let a = DecisionSplit::of_test(&numbered(500)).unwrap();
        let b = DecisionSplit::of_test(&numbered(500)).unwrap();
        assert_eq!(a.validation.images, b.validation.images);
    }

    #[test]
    fn tiny_splits_keep_an_image_on_each_side_or_are_refused() {
        let split = DecisionSplit::of_test(&numbered(2)).unwrap();
        assert_eq!((split.validation.len(), split.reported.len()), (1, 1));
        let split = DecisionSplit::of_test(&numbered(3)).unwrap();
        assert!(!split.validation.is_empty() && !split.reported.is_empty());
        let err = DecisionSplit::of_test(&numbered(1)).err().unwrap();
        assert!(err.to_string().contains("at least 2"), "{err}");
    }
}
