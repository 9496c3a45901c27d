//! `--sensitivity-cache` files: each layer's curve along the quantizer ladder, kept between runs
//! so that allocation and fine-tuning can be re-run without measuring again, and refused when
//! another build or other settings measured them.

use super::bit_curves::BitsCurve;
use super::quantizer::Quantizer;
use crate::compress::pipeline::{Coder, CompressConfig};
use crate::fsutil;
use anyhow::{Result, bail};
use std::path::Path;

/// Version of what a ladder step measures, kept in the files: bumped whenever sharing changes
/// what a step produces for the same ladder, so that a cache measured by another build is
/// refused instead of steering the allocation with stale numbers. 2: row scales and
/// error-compensated rounding (GPTQ) of every convolution. 3: bytes are those of the encoding
/// chosen (range coding only where it saves 10%), no longer always the range coder's. 4: with
/// compensation, measured on every other photo, compensated with the others' statistics.
const MEASUREMENT: u32 = 4;

/// What a cache's curves depend on besides the tensors' names.
#[derive(Debug, Clone, PartialEq)]
pub struct CurveCacheKey {
    coder: Coder,
    gap_bits: u8,
    views: usize,
    statistics_views: usize,
    /// [`super::fingerprint::inputs_key`] of the model and the views the curves are measured on.
    inputs: String,
}

/// A `--sensitivity-cache` file.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurveCache {
    /// [`MEASUREMENT`] of the build that measured it.
    measurement: u32,
    /// The entropy coders the bytes were measured with (`--coder`).
    coder: Coder,
    /// The gap width the bytes were measured with (`--gap-bits`, 0: the best of 2–10).
    gap_bits: u8,
    /// Views per photo measured (`--views`; absent in caches of earlier builds, which were
    /// taken as measured with this run's).
    #[serde(default)]
    views: Option<usize>,
    /// Views per photo of the GPTQ statistics (`--statistics-views`, absent: as `views`).
    #[serde(default)]
    statistics_views: Option<usize>,
    /// The ladder the curves were measured along (absent in caches of earlier builds, which are
    /// refused: a curve shorter than the ladder may have stopped, or been measured on a shorter
    /// one).
    #[serde(default)]
    ladder: Option<Vec<Quantizer>>,
    /// The model and views measured ([`CurveCacheKey::inputs`]; absent in earlier builds' caches,
    /// which are refused).
    #[serde(default)]
    inputs: Option<String>,
    /// Per shared tensor, agreement along the ladder.
    curves: Vec<BitsCurve>,
}

impl CurveCache {
    /// The key of a run encoding with `cfg` and measuring `views` (and `statistics_views`) per
    /// photo; `inputs`: [`super::fingerprint::inputs_key`] of the model and the views measured.
    pub fn key(
        cfg: &CompressConfig,
        views: usize,
        statistics_views: usize,
        inputs: String,
    ) -> CurveCacheKey {
        CurveCacheKey {
            coder: cfg.coder,
            gap_bits: cfg.gap_bits,
            views,
            statistics_views,
            inputs,
        }
    }

    /// The curves of the file at `p`, if it was measured by this build with `key`'s settings on
    /// `layers` along `ladder`; otherwise an error saying what differs.
    pub fn read(
        p: &Path,
        key: &CurveCacheKey,
        layers: &[String],
        ladder: &[Quantizer],
    ) -> Result<Vec<BitsCurve>> {
        let file: CurveCache = serde_json::from_slice(&fsutil::read(p)?).map_err(|_| {
            anyhow::anyhow!(
                "{} is not a sensitivity cache of this version of nnzip (measurement {MEASUREMENT}): delete it to measure again",
                p.display()
            )
        })?;
        if file.measurement != MEASUREMENT {
            bail!(
                "{} was measured by another version of nnzip's sharing (measurement {}, this build {MEASUREMENT}): delete it to measure again",
                p.display(),
                file.measurement
            );
        }
        let (views, stats) = (
            file.views.unwrap_or(key.views),
            file.statistics_views.or(file.views).unwrap_or(key.views),
        );
        if (views, stats) != (key.views, key.statistics_views) {
            bail!(
                "{} was measured with --views {views} and --statistics-views {stats} (this run: {} and {}): delete it to measure again, or compress with its settings",
                p.display(),
                key.views,
                key.statistics_views
            );
        }
        if (file.coder, file.gap_bits) != (key.coder, key.gap_bits) {
            bail!(
                "{} was measured with --coder {} and gap width {} (this run: --coder {}, gap width {}; 0 = the best of 2–10): delete it to measure again, or compress with its settings",
                p.display(),
                file.coder.name(),
                file.gap_bits,
                key.coder.name(),
                key.gap_bits
            );
        }
        if file.inputs.as_ref() != Some(&key.inputs) {
            bail!(
                "{} was measured on another model or other photos ({}; this run: {}): delete it to measure again",
                p.display(),
                file.inputs.as_deref().unwrap_or("not recorded"),
                key.inputs
            );
        }
        let curves = file.curves;
        let names: Vec<&String> = curves.iter().map(|c| &c.name).collect();
        let same_ladder = file.ladder.as_deref() == Some(ladder)
            && curves.iter().all(|c| {
                c.points.len() <= ladder.len()
                    && c.points.iter().zip(ladder).all(|(p, q)| p.quantizer == *q)
            });
        if names != layers.iter().collect::<Vec<_>>() || !same_ladder {
            bail!(
                "{} was measured on other tensors or another ladder: delete it to measure again",
                p.display()
            );
        }
        Ok(curves)
    }

    /// Writes `curves`, measured with `key`'s settings, to `p`.
    pub fn write(
        p: &Path,
        key: &CurveCacheKey,
        ladder: &[Quantizer],
        curves: &[BitsCurve],
    ) -> Result<()> {
        let file = CurveCache {
            ladder: Some(ladder.to_vec()),
            inputs: Some(key.inputs.clone()),
            measurement: MEASUREMENT,
            coder: key.coder,
            gap_bits: key.gap_bits,
            views: Some(key.views),
            statistics_views: Some(key.statistics_views),
            curves: curves.to_vec(),
        };
        fsutil::write_atomic(p, &serde_json::to_vec(&file)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::label_free::agreement::Agreement;
    use crate::compress::label_free::bit_curves::BitsPoint;

    fn grid(step: f64) -> Quantizer {
        Quantizer::Uniform {
            step,
            row_scaled: true,
            compensated: true,
        }
    }

    #[test]
    fn curves_are_read_back_only_for_the_same_inputs_and_ladder() {
        let path = std::env::temp_dir().join(format!("nnzip-curves-{}.json", std::process::id()));
        let cfg = CompressConfig::default();
        let key = |inputs: &str| CurveCache::key(&cfg, 2, 2, inputs.to_string());
        let ladder = [grid(0.3), grid(0.6)];
        // A curve that stopped after its first step (too sensitive for the second).
        let curves = [BitsCurve {
            name: "w".into(),
            elements: 10,
            points: vec![BitsPoint {
                quantizer: grid(0.3),
                bits: 5,
                bytes: 7,
                agreement: Agreement::default(),
            }],
        }];
        let layers = ["w".to_string()];
        CurveCache::write(&path, &key("model 1"), &ladder, &curves).unwrap();
        let read = CurveCache::read(&path, &key("model 1"), &layers, &ladder).unwrap();
        assert_eq!((read.len(), read[0].points[0].bytes), (1, 7));
        let err = |k: &CurveCacheKey, l: &[Quantizer]| {
            format!("{:#}", CurveCache::read(&path, k, &layers, l).unwrap_err())
        };
        let other = err(&key("model 2"), &ladder);
        assert!(other.contains("another model or other photos"), "{other}");
        // A longer ladder: the stopped curve might have gone on along it.
        let longer = err(&key("model 1"), &[grid(0.3), grid(0.6), grid(1.3)]);
        assert!(longer.contains("another ladder"), "{longer}");
        let _ = std::fs::remove_file(&path);
    }
}
