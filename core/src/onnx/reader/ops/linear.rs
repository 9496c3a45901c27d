//! Matrix products: MatMul (numpy semantics, batched) and Gemm.

use super::{broadcast, one};
use crate::error::Result;
use crate::onnx::reader::Graph;
use crate::onnx::reader::node::Node;
use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math;

/// The einsum expression of numpy's matmul for operands of ranks `a` and `b`: a rank-1 operand
/// is a vector (its axis is contracted and does not appear in the output), leading axes
/// broadcast as batch axes aligned on the right. Two vectors give their dot product, a scalar.
fn matmul_expression(a: usize, b: usize) -> Option<String> {
    let batch = |n: usize| -> String { ('a'..='h').take(n).collect() };
    match (a, b) {
        (0, _) | (_, 0) => None,
        (1, 1) => Some("k,k->".into()),
        (1, b) if b <= 10 => Some(format!("k,{p}kn->{p}n", p = batch(b - 2))),
        (a, 1) if a <= 10 => Some(format!("{p}mk,k->{p}m", p = batch(a - 2))),
        (a, b) if a <= 10 && b <= 10 => {
            let c = a.max(b) - 2;
            let all = batch(c);
            let pa: String = all.chars().skip(c - (a - 2)).collect();
            let pb: String = all.chars().skip(c - (b - 2)).collect();
            Some(format!("{pa}mk,{pb}kn->{all}mn"))
        }
        _ => None,
    }
}

pub(super) fn matmul(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let (a, b) = (node.fact(graph, 0)?, node.fact(graph, 1)?);
    let expr = matmul_expression(a.rank(), b.rank()).ok_or_else(|| {
        node.error(format!(
            "operands of rank {} and {} cannot be multiplied (ranks 1 to 10)",
            a.rank(),
            b.rank()
        ))
    })?;
    let axes = expr.parse().map_err(|e| node.tract(e))?;
    let inputs = [node.input(0)?, node.input(1)?];
    one(graph.wire1(node, "", EinSum::new(axes, a.datum_type), &inputs)?)
}

/// `alpha * A' B' + beta * C`, with `A'`, `B'` transposed as `transA`/`transB` say and `C`
/// broadcast to the product's shape.
pub(super) fn gemm(graph: &mut Graph, node: &Node) -> Result<TVec<OutletId>> {
    let alpha = node.float_or("alpha", 1.0)?;
    let beta = node.float_or("beta", 1.0)?;
    let trans_a = node.flag("transA", false)?;
    let trans_b = node.flag("transB", false)?;
    let (fa, fb) = (node.fact(graph, 0)?, node.fact(graph, 1)?);
    if fa.rank() != 2 || fb.rank() != 2 {
        return Err(node.error(format!(
            "A and B must be matrices, got ranks {} and {}",
            fa.rank(),
            fb.rank()
        )));
    }
    let axes =
        AxesMapping::for_numpy_matmul(2, trans_a, trans_b, false).map_err(|e| node.tract(e))?;
    let inputs = [node.input(0)?, node.input(1)?];
    let mut wire = graph.wire1(node, "ab", EinSum::new(axes, fa.datum_type), &inputs)?;
    if alpha != 1.0 {
        let c = graph.scalar(node, "alpha_ab.cst", alpha, fa.datum_type, 2)?;
        wire = graph.wire1(node, "alpha_ab", math::mul(), &[c, wire])?;
    }
    if let Some(c) = node.optional_input(2).filter(|_| beta != 0.0) {
        let rank = node.rank(graph, 2)?;
        if rank > 2 {
            return Err(node.error(format!("C must have rank 2 at most, got {rank}")));
        }
        let b = graph.scalar(node, "beta_c.cst", beta, fa.datum_type, 2)?;
        let beta_c = broadcast(graph, node, "beta_c", math::mul(), b, c)?;
        wire = graph.wire1(node, "", math::add(), &[wire, beta_c])?;
    }
    one(wire)
}

#[cfg(test)]
mod tests {
    use super::matmul_expression;

    #[test]
    fn matmul_expressions_follow_numpy() {
        assert_eq!(matmul_expression(2, 2).as_deref(), Some("mk,kn->mn"));
        assert_eq!(matmul_expression(3, 2).as_deref(), Some("amk,kn->amn"));
        assert_eq!(matmul_expression(2, 4).as_deref(), Some("mk,abkn->abmn"));
        assert_eq!(matmul_expression(1, 3).as_deref(), Some("k,akn->an"));
        assert_eq!(matmul_expression(3, 1).as_deref(), Some("amk,k->am"));
        assert_eq!(matmul_expression(1, 1).as_deref(), Some("k,k->"));
        assert_eq!(matmul_expression(0, 2), None);
    }
}
