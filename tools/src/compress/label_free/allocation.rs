//! Bits across layers: per layer, the ladder step that minimises bytes + λ·KL.

use super::bit_curves::BitsCurve;
use std::collections::BTreeMap;

/// Per layer, the ladder position that minimises `bytes + λ · KL` (λ in bytes per nat of mean
/// KL divergence: how many bytes a unit of disagreement is worth). The KL of layers shared
/// together is taken to add up, which holds for small perturbations.
pub fn allocate(curves: &[BitsCurve], lambda: f64) -> BTreeMap<String, usize> {
    curves
        .iter()
        .filter_map(|c| {
            c.points
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    let ca = a.bytes as f64 + lambda * a.agreement.kl;
                    let cb = b.bytes as f64 + lambda * b.agreement.kl;
                    ca.total_cmp(&cb)
                })
                .map(|(i, _)| (c.name.clone(), i))
        })
        .collect()
}

/// The predicted payload bytes of an allocation (from the curves).
pub fn predicted_bytes(curves: &[BitsCurve], levels: &BTreeMap<String, usize>) -> u64 {
    curves
        .iter()
        .filter_map(|c| c.points.get(*levels.get(&c.name)?).map(|p| p.bytes))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::label_free::agreement::Agreement;
    use crate::compress::label_free::bit_curves::BitsPoint;
    use crate::compress::label_free::quantizer::Quantizer;

    fn curve(name: &str, pts: &[(u8, u64, f64)]) -> BitsCurve {
        BitsCurve {
            name: name.into(),
            elements: 100,
            points: pts
                .iter()
                .map(|&(bits, bytes, kl)| BitsPoint {
                    quantizer: Quantizer::Kmeans {
                        bits,
                        row_scaled: false,
                    },
                    bits,
                    bytes,
                    agreement: Agreement {
                        views: 1,
                        top1: 1.0,
                        top5: 1.0,
                        kl,
                        ..Default::default()
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn allocation_trades_bytes_for_kl() {
        let curves = vec![
            curve("a", &[(8, 800, 0.0), (4, 400, 0.001), (2, 200, 0.5)]),
            curve("b", &[(8, 800, 0.0), (4, 400, 0.2), (2, 200, 1.0)]),
        ];
        // Bytes only: the fewest bits everywhere.
        let cheap = allocate(&curves, 0.0);
        assert_eq!((cheap["a"], cheap["b"]), (2, 2), "positions of 2 bits");
        // KL expensive: the robust layer goes to 4 bits, the sensitive one stays at 8.
        let careful = allocate(&curves, 10_000.0);
        assert_eq!((careful["a"], careful["b"]), (1, 0), "4 bits and 8 bits");
        assert_eq!(predicted_bytes(&curves, &careful), 1200);
    }
}
