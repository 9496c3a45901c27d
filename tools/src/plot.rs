//! PNG charts for reports: line charts (sensitivity curves) and histograms (weights, with the
//! shared centroids marked). The font is embedded (DejaVu Sans), so plotting needs nothing from
//! the system.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const SIZE: (u32, u32) = (960, 600);

fn register_font() {
    static FONT: Once = Once::new();
    FONT.call_once(|| {
        // The bytes are a valid TrueType font shipped by the `dejavu` crate.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// Draws into a temporary PNG beside `path`, then renames it: no half-written chart is left.
fn draw_png(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    register_font();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".into());
    let tmp = path.with_file_name(format!(".{stem}.{}.tmp.png", std::process::id()));
    let result = (|| -> Result<()> {
        let root = BitMapBackend::new(&tmp, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("cannot draw {}", path.display())))
        }
    }
}

/// One named curve of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points `(x, y)` in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart with markers, one colour per series, and a legend; `log_x` puts x on a log scale.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = bounds(xs);
    let (y0, y1) = bounds(ys);
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    draw_png(path, |root| {
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(title, ("sans-serif", 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64);
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .label_style(("sans-serif", 15))
                    .draw()
                    .map_err(err)?;
                for (i, s) in series.iter().enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    chart
                        .draw_series(LineSeries::new(
                            s.points.iter().copied(),
                            color.stroke_width(2),
                        ))
                        .map_err(err)?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(err)?;
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .label_font(("sans-serif", 15))
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(err)?;
            }};
        }
        if log_x {
            let x0 = x0.max(1e-6);
            body!(
                builder
                    .build_cartesian_2d((x0..x1.max(x0 * 1.01)).log_scale(), (y0 - pad)..(y1 + pad))
                    .map_err(err)?
            );
        } else {
            body!(
                builder
                    .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
                    .map_err(err)?
            );
        }
        Ok(())
    })
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) }
}

/// A histogram of `values` in `bins` bins; `markers` (e.g. the shared centroids) are drawn as
/// vertical red lines.
pub fn histogram(
    path: &Path,
    title: &str,
    values: &[f32],
    bins: usize,
    markers: &[f32],
) -> Result<()> {
    let bins = bins.max(1);
    let (lo, hi) = bounds(values.iter().chain(markers).map(|&v| v as f64));
    let width = ((hi - lo) / bins as f64).max(1e-12);
    let mut counts = vec![0u64; bins];
    for &v in values {
        if v.is_finite() {
            let b = (((v as f64 - lo) / width) as usize).min(bins - 1);
            counts[b] += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.05;
    draw_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(lo..(lo + width * bins as f64), 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("weight value")
            .y_desc("count")
            .label_style(("sans-serif", 15))
            .disable_x_mesh()
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, &c)| {
                        let x0 = lo + i as f64 * width;
                        Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], BLUE.mix(0.6).filled())
                    }),
            )
            .map_err(err)?;
        if !markers.is_empty() {
            chart
                .draw_series(markers.iter().map(|&m| {
                    PathElement::new(vec![(m as f64, 0.0), (m as f64, top)], RED.stroke_width(1))
                }))
                .map_err(err)?
                .label(format!("{} centroids", markers.len()))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 2000)
    }

    #[test]
    fn charts_are_written_as_png_and_leave_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("nnzip-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = dir.join("lines.png");
        let s = vec![
            Series {
                name: "a".into(),
                points: vec![(0.01, 0.1), (0.1, 0.7), (1.0, 0.9)],
            },
            Series {
                name: "b".into(),
                points: vec![(0.01, 0.3), (0.1, 0.8), (1.0, 0.9)],
            },
        ];
        line_chart(&lines, "t", "density", "accuracy", &s, true).unwrap();
        assert!(is_png(&lines));
        let hist = dir.join("hist.png");
        let values: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin()).collect();
        histogram(&hist, "w", &values, 50, &[-0.5, 0.0, 0.5]).unwrap();
        assert!(is_png(&hist));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        // A chart into a missing directory is an error naming the file.
        let bad = dir.join("no/such/dir/x.png");
        let e = histogram(&bad, "w", &values, 10, &[]).unwrap_err();
        assert!(format!("{e:#}").contains("x.png"), "{e:#}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
