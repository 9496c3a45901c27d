//! Magnitude pruning: the paper's per-layer threshold `quality × std(layer)`, or a target density.

use anyhow::{Result, bail};

/// Population standard deviation of the weights.
pub fn std_dev(w: &[f32]) -> f64 {
    if w.is_empty() {
        return 0.0;
    }
    let n = w.len() as f64;
    let mean = w.iter().map(|&x| x as f64).sum::<f64>() / n;
    (w.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}

/// Mask of the weights kept by Han et al.'s rule: `|w| ≥ quality × std(w)`.
pub fn mask_by_quality(w: &[f32], quality: f64) -> Result<Vec<bool>> {
    if !(quality.is_finite() && quality >= 0.0) {
        bail!("pruning quality must be a finite number ≥ 0, got {quality}");
    }
    let t = quality * std_dev(w);
    Ok(w.iter()
        .map(|&x| (x.abs() as f64) >= t && x != 0.0)
        .collect())
}

/// Mask keeping the `density` fraction of weights with the largest magnitude (ties broken by
/// position, so the kept count is exact: `round(density × n)`).
pub fn mask_by_density(w: &[f32], density: f64) -> Result<Vec<bool>> {
    if !(density > 0.0 && density <= 1.0) {
        bail!("density must be in (0, 1], got {density}");
    }
    let keep = ((density * w.len() as f64).round() as usize).min(w.len());
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| w[b].abs().total_cmp(&w[a].abs()).then(a.cmp(&b)));
    let mut mask = vec![false; w.len()];
    for &i in &order[..keep] {
        mask[i] = w[i] != 0.0;
    }
    Ok(mask)
}

/// Sets the pruned weights to exactly zero.
pub fn apply_mask(w: &mut [f32], mask: &[bool]) {
    for (x, &keep) in w.iter_mut().zip(mask) {
        if !keep {
            *x = 0.0;
        }
    }
}

/// Fraction of `true` in a mask.
pub fn density(mask: &[bool]) -> f64 {
    if mask.is_empty() {
        0.0
    } else {
        mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_threshold_follows_the_paper() {
        let w = [0.1f32, -0.1, 0.5, -0.5, 0.0, 1.0];
        let s = std_dev(&w);
        let m = mask_by_quality(&w, 0.5).unwrap();
        for (x, k) in w.iter().zip(&m) {
            assert_eq!(*k, (x.abs() as f64) >= 0.5 * s && *x != 0.0);
        }
        assert!(mask_by_quality(&w, f64::NAN).is_err());
    }

    #[test]
    fn density_is_exact() {
        let w: Vec<f32> = (1..=100)
            .map(|i| i as f32 * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let m = mask_by_density(&w, 0.08).unwrap();
        assert_eq!(m.iter().filter(|&&k| k).count(), 8);
        assert!(m[99] && m[92] && !m[91]);
        assert!(mask_by_density(&w, 0.0).is_err());
        assert!(mask_by_density(&w, 1.5).is_err());
        let mut v = w.clone();
        apply_mask(&mut v, &m);
        assert_eq!(v.iter().filter(|&&x| x != 0.0).count(), 8);
    }
}
