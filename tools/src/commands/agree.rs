//! `nnzip agree MODEL.nnz --teacher DENSE.onnx --photos DIR`: how often a compressed model agrees
//! with its dense original on unlabelled photos — top-1 agreement, the dense class in the top 5,
//! KL divergence of the softmax outputs — for developers who check a compressed model on photos
//! of their own, without labels, after `nnzip compress`.

use crate::compress::label_free::agreement::{
    Agreement, MarginBands, agreement, argmax, logits, margin_bands,
};
use crate::compress::label_free::photos::{HOLDOUT_SEED_SALT, load_photos, make_views};
use crate::compress::label_free::student::{StudentBuilder, binary16_weights};
use crate::table::Table;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `nnzip agree`.
#[derive(Debug, Args)]
pub struct AgreeArgs {
    /// The compressed model (`.nnz`, with its preprocessing in the metadata).
    pub model: PathBuf,
    /// The dense original: its ONNX file (or a `.nnz`).
    #[arg(long)]
    pub teacher: PathBuf,
    /// A folder of JPEG/PNG photos, searched recursively; other files are skipped and listed.
    #[arg(long)]
    pub photos: PathBuf,
    /// Views per photo: the whole photo, then random crops and mirror images. With the same
    /// `--views` and `--seed`, the views `nnzip compress --holdout` measures.
    #[arg(long, default_value_t = 8)]
    pub views: usize,
    /// Seed of the random views.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object on stdout: the agreement figures, photos, views and skipped files.
    #[arg(long)]
    pub json: bool,
}

/// Runs `nnzip agree`.
pub fn run(args: &AgreeArgs) -> Result<()> {
    if args.views == 0 {
        bail!("--views must be at least 1");
    }
    let student = super::eval::load_model(&args.model)?;
    let pre = student.metadata().preprocessing.clone().with_context(|| {
        format!(
            "{} has no image preprocessing in its metadata: compress or pack it with --preprocess",
            args.model.display()
        )
    })?;
    // The teacher as a builder of models, so that its binary16 twin (the reference below) is
    // built from the same weights.
    let teacher_bytes = crate::fsutil::read(&args.teacher)?;
    let onnx = if teacher_bytes.starts_with(&nnzip_core::format::MAGIC) {
        super::decompress::decompress_bytes(&teacher_bytes)
            .with_context(|| format!("cannot decode {}", args.teacher.display()))?
    } else {
        teacher_bytes
    };
    let builder = StudentBuilder::new(
        crate::pack::pack_onnx(&onnx, &Default::default())
            .with_context(|| format!("cannot read {} as ONNX", args.teacher.display()))?,
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
            args.teacher.display(),
            args.model.display()
        );
    }
    let folder = load_photos(&args.photos, &pre)?;
    let views = make_views(&folder, args.views, &pre, args.seed ^ HOLDOUT_SEED_SALT)?;
    let dense = logits(&teacher, &views)?;
    let compressed = logits(&student, &views)?;
    if let (Some(t), Some(s)) = (dense.first(), compressed.first())
        && t.len() != s.len()
    {
        bail!(
            "the teacher gives {} outputs per image and the model {}: is {} the original of {}?",
            t.len(),
            s.len(),
            args.teacher.display(),
            args.model.display()
        );
    }
    let a = agreement(&dense, &compressed);
    // Views of one photo move together: how many photos hold every disagreement says more
    // about the spread than the view count.
    let photos_disagreeing = disagreeing_photos(&dense, &compressed, &views.photo);
    let bands = margin_bands(&dense, &compressed);
    // The reference: the teacher with every weight rounded to binary16, the mildest rounding a
    // stored model can have. Where it disagrees, the view is a tie no compression can keep.
    let twin = logits(
        &builder.model(&binary16_weights(builder.weights()))?,
        &views,
    )?;
    let floor = agreement(&dense, &twin);
    let floor_bands = margin_bands(&dense, &twin);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "model": args.model,
                "teacher": args.teacher,
                "photos": folder.photos.len(),
                "views_per_photo": args.views,
                "agreement": a,
                "photos_with_a_top1_disagreement": photos_disagreeing,
                "by_teacher_margin": bands,
                "binary16_reference": {"agreement": floor, "by_teacher_margin": floor_bands},
                "skipped": folder.skipped,
            })
        );
        return Ok(());
    }
    print!("{}", render(&a, folder.photos.len(), photos_disagreeing));
    println!();
    print!("{}", margin_table(&bands, &floor_bands).render());
    print!("{}", reference_note(&floor));
    if !folder.skipped.is_empty() {
        eprintln!("skipped {} files:", folder.skipped.len());
        for s in &folder.skipped {
            eprintln!("  {}: {}", s.path.display(), s.reason);
        }
    }
    Ok(())
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

fn render(a: &Agreement, photos: usize, photos_disagreeing: usize) -> String {
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
        photos.to_string(),
        a.views.to_string(),
        format!("{:.2}%", a.top1 * 100.0),
        format!("{:.2}%", a.top5 * 100.0),
        format!("{:.4}", a.kl),
        format!("{:.2}% of {}", a.confident_top1 * 100.0, a.confident_views),
        format!("{photos_disagreeing} of {photos}"),
    ]);
    format!(
        "{}top-1 = the dense model's class; top-5 = the dense class among the model's first five; \
         confident = views where the dense model gives its class ≥ 50%\n",
        t.render()
    )
}

/// Top-1 agreement by the teacher's margin, next to the binary16 reference's.
pub fn margin_table(bands: &MarginBands, reference: &MarginBands) -> Table {
    let mut t = Table::new(&[
        "dense margin (top-1 − top-2)",
        "views",
        "top-1",
        "top-5",
        "binary16 reference top-1",
    ]);
    for (b, f) in bands.bands.iter().zip(&reference.bands) {
        t.row(vec![
            format!("{:.0}–{:.0} points", b.from * 100.0, b.to * 100.0),
            b.views.to_string(),
            format!("{:.2}% ({} of {})", b.top1() * 100.0, b.agree, b.views),
            format!("{} of {}", b.top5, b.views),
            format!("{:.2}% ({} of {})", f.top1() * 100.0, f.agree, f.views),
        ]);
    }
    t
}

/// What the binary16 reference is, with its figures.
pub fn reference_note(floor: &Agreement) -> String {
    format!(
        "binary16 reference: the dense model with every weight rounded to binary16 (the mildest \
         rounding a stored model can have, 2× smaller) agrees on {:.2}% of these views (top-5 \
         {:.2}%, KL {:.6}); views it gets wrong are closer to a tie than any compression keeps\n",
        floor.top1 * 100.0,
        floor.top5 * 100.0,
        floor.kl
    )
}
