//! How often a compressed model agrees with its dense original on unlabelled photos (`nnzip
//! agree`): top-1 agreement, the dense class in the top 5, KL divergence of the softmax outputs,
//! by the dense model's margin, next to the dense model with binary16 weights.

use crate::compress::label_free::agreement::{
    Agreement, MarginBands, agreement, argmax, logits, margin_bands,
};
use crate::compress::label_free::photos::{HOLDOUT_SEED_SALT, Skipped, load_photos, make_views};
use crate::compress::label_free::student::{StudentBuilder, binary16_weights};
use crate::compress::report::{margin_table, reference_note};
use crate::model_file::{decompress_bytes, load_model};
use crate::table::Table;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// What `nnzip agree` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhotoAgreement {
    /// Photos used.
    pub photos: usize,
    /// Views per photo.
    pub views_per_photo: usize,
    /// Agreement over every view.
    pub agreement: Agreement,
    /// Photos with at least one view whose top-1 class differs.
    pub photos_with_a_top1_disagreement: usize,
    /// Top-1 agreement by the dense model's margin.
    pub by_teacher_margin: MarginBands,
    /// The dense model with binary16 weights on the same views.
    pub binary16_reference: Binary16Reference,
    /// Files of the folder that were skipped.
    pub skipped: Vec<Skipped>,
}

/// The binary16 twin's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Binary16Reference {
    /// Its agreement over every view.
    pub agreement: Agreement,
    /// By the dense model's margin.
    pub by_teacher_margin: MarginBands,
}

/// Measures `model` (a `.nnz` with its preprocessing) against `teacher` (ONNX or `.nnz`) on
/// `views` views of every photo under `photos`, cut with `seed` as `nnzip compress --holdout`
/// cuts them.
pub fn agree_on_photos(
    model: &Path,
    teacher_path: &Path,
    photos: &Path,
    views: usize,
    seed: u64,
) -> Result<PhotoAgreement> {
    if views == 0 {
        bail!("--views must be at least 1");
    }
    let student = load_model(model)?;
    let pre = student.metadata().preprocessing.clone().with_context(|| {
        format!(
            "{} has no image preprocessing in its metadata: compress or pack it with --preprocess",
            model.display()
        )
    })?;
    // The teacher as a builder of models, so that its binary16 twin (the reference below) is
    // built from the same weights.
    let teacher_bytes = crate::fsutil::read(teacher_path)?;
    let onnx = if teacher_bytes.starts_with(&nnzip_core::format::MAGIC) {
        decompress_bytes(&teacher_bytes)
            .with_context(|| format!("cannot decode {}", teacher_path.display()))?
    } else {
        teacher_bytes
    };
    let builder = StudentBuilder::new(
        crate::packing::pack_onnx(&onnx, &Default::default())
            .with_context(|| format!("cannot read {} as ONNX", teacher_path.display()))?,
    );
    let teacher = builder.model(&Default::default())?;
    let (t_in, s_in) = (
        &teacher.metadata().input.shape,
        &student.metadata().input.shape,
    );
    // -1 is a dynamic dimension (the batch): it matches anything.
    let clash = t_in.len() != s_in.len()
        || t_in
            .iter()
            .zip(s_in)
            .any(|(&t, &s)| t > 0 && s > 0 && t != s);
    if clash {
        bail!(
            "the teacher takes inputs of shape {t_in:?} and the model {s_in:?}: is {} the original of {}?",
            teacher_path.display(),
            model.display()
        );
    }
    let folder = load_photos(photos, &pre)?;
    let cut = make_views(&folder, views, &pre, seed ^ HOLDOUT_SEED_SALT)?;
    let dense = logits(&teacher, &cut)?;
    let compressed = logits(&student, &cut)?;
    if let (Some(t), Some(s)) = (dense.first(), compressed.first())
        && t.len() != s.len()
    {
        bail!(
            "the teacher gives {} outputs per image and the model {}: is {} the original of {}?",
            t.len(),
            s.len(),
            teacher_path.display(),
            model.display()
        );
    }
    // The reference: the teacher with every weight rounded to binary16, the mildest rounding a
    // stored model can have. Where it disagrees, the view is a tie no compression can keep.
    let twin = logits(&builder.model(&binary16_weights(builder.weights()))?, &cut)?;
    Ok(PhotoAgreement {
        photos: folder.photos.len(),
        views_per_photo: views,
        agreement: agreement(&dense, &compressed),
        // Views of one photo move together: how many photos hold every disagreement says more
        // about the spread than the view count.
        photos_with_a_top1_disagreement: disagreeing_photos(&dense, &compressed, &cut.photo),
        by_teacher_margin: margin_bands(&dense, &compressed),
        binary16_reference: Binary16Reference {
            agreement: agreement(&dense, &twin),
            by_teacher_margin: margin_bands(&dense, &twin),
        },
        skipped: folder.skipped,
    })
}

/// Photos with at least one view whose top-1 class differs between `dense` and `compressed`.
fn disagreeing_photos(dense: &[Vec<f32>], compressed: &[Vec<f32>], photo: &[usize]) -> usize {
    let mut photos: Vec<usize> = dense
        .iter()
        .zip(compressed)
        .zip(photo)
        .filter(|((d, c), _)| argmax(d) != argmax(c))
        .map(|(_, &p)| p)
        .collect();
    photos.sort_unstable();
    photos.dedup();
    photos.len()
}

impl PhotoAgreement {
    /// The report as text: the figures, by margin, and the binary16 reference.
    pub fn render(&self) -> String {
        let a = &self.agreement;
        let mut t = Table::new(&[
            "photos",
            "views",
            "top-1",
            "top-5",
            "KL",
            "confident top-1",
            "photos with a top-1 disagreement",
        ]);
        t.row(vec![
            self.photos.to_string(),
            a.views.to_string(),
            format!("{:.2}%", a.top1 * 100.0),
            format!("{:.2}%", a.top5 * 100.0),
            format!("{:.4}", a.kl),
            format!("{:.2}% of {}", a.confident_top1 * 100.0, a.confident_views),
            format!(
                "{} of {}",
                self.photos_with_a_top1_disagreement, self.photos
            ),
        ]);
        format!(
            "{}top-1 = the dense model's class; top-5 = the dense class among the model's first five; \
             confident = views where the dense model gives its class ≥ 50%\n\n{}{}",
            t.render(),
            margin_table(
                &self.by_teacher_margin,
                &self.binary16_reference.by_teacher_margin
            )
            .render(),
            reference_note(&self.binary16_reference.agreement)
        )
    }
}
