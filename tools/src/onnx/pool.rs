//! 2-D max pooling as a candle custom op: the forward pass takes each window's maximum, the
//! backward pass sends each output's gradient to the position of that maximum (its first
//! occurrence, as PyTorch does).
//!
//! Built from candle ops (reshape + `max`, whose backward pass compares every input with the
//! broadcast maximum) pooling took ~10% of a LeNet-5 training step; candle's own `max_pool2d`
//! cannot be used for training: its backward pass scales the gradient by 1/(kh·kw).

use super::contiguous;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// How a max pooling window slides over its input. Positions outside the input (padding,
/// including `ceil_mode`'s extra bottom/right rows) never win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Step `[vertical, horizontal]`.
    pub strides: [usize; 2],
    /// Window dilation `[vertical, horizontal]`.
    pub dilations: [usize; 2],
    /// Padding before the input `[top, left]`.
    pub pads: [usize; 2],
    /// Output size `[oh, ow]`.
    pub out: [usize; 2],
}

/// Element types the kernels run on.
trait Element: Copy + Send + Sync + PartialOrd + std::ops::AddAssign + 'static {
    const ZERO: Self;
    const NEG_INFINITY: Self;
}
impl Element for f32 {
    const ZERO: Self = 0.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
}
impl Element for f64 {
    const ZERO: Self = 0.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
}

impl PoolGeometry {
    /// Calls `f(output index, index of the window's maximum in the plane)` for every output of
    /// one `h × w` plane; windows entirely in the padding have no maximum (`None`).
    #[inline]
    fn for_each_max<T: Element>(
        &self,
        plane: &[T],
        h: usize,
        w: usize,
        mut f: impl FnMut(usize, Option<usize>),
    ) {
        let [kh, kw] = self.kernel;
        let [sy, sx] = self.strides;
        let [dy, dx] = self.dilations;
        let [oh, ow] = self.out;
        for oy in 0..oh {
            let y0 = (oy * sy) as isize - self.pads[0] as isize;
            let rows_inside = y0 >= 0 && y0 as usize + (kh - 1) * dy < h;
            for ox in 0..ow {
                let x0 = (ox * sx) as isize - self.pads[1] as isize;
                let mut best: Option<(usize, T)> = None;
                if rows_inside && x0 >= 0 && x0 as usize + (kw - 1) * dx < w {
                    // The whole window is inside the input: no bounds checks per tap.
                    let (y0, x0) = (y0 as usize, x0 as usize);
                    let mut at = y0 * w + x0;
                    let mut v = plane[at];
                    for ki in 0..kh {
                        let row = (y0 + ki * dy) * w + x0;
                        for kj in 0..kw {
                            let i = row + kj * dx;
                            if plane[i] > v {
                                (at, v) = (i, plane[i]);
                            }
                        }
                    }
                    best = Some((at, v));
                } else {
                    for ki in 0..kh {
                        let y = y0 + (ki * dy) as isize;
                        if y < 0 || y as usize >= h {
                            continue;
                        }
                        for kj in 0..kw {
                            let x = x0 + (kj * dx) as isize;
                            if x < 0 || x as usize >= w {
                                continue;
                            }
                            let i = y as usize * w + x as usize;
                            if best.is_none_or(|(_, b)| plane[i] > b) {
                                best = Some((i, plane[i]));
                            }
                        }
                    }
                }
                f(oy * ow + ox, best.map(|(i, _)| i));
            }
        }
    }
}

impl PoolGeometry {
    /// Non-overlapping windows that all lie inside the input (kernel = stride, no dilation, no
    /// padding): LeNet's 2×2 pooling. This case runs without data-dependent branches; the general
    /// loop's compare-and-branch per tap mispredicts about every other time on real activations,
    /// and LeNet's pooling is a visible share of its training step (docs/PERFORMANCE.md).
    fn tiled(&self, h: usize, w: usize) -> bool {
        self.kernel == self.strides
            && self.dilations == [1, 1]
            && self.pads == [0, 0]
            && self.out[0] * self.kernel[0] <= h
            && self.out[1] * self.kernel[1] <= w
    }
}

/// `if a > b { a } else { b }`: a select, not a branch.
#[inline(always)]
fn max<T: Element>(a: T, b: T) -> T {
    if a > b { a } else { b }
}

fn forward<T: Element>(x: &[T], planes: usize, h: usize, w: usize, g: &PoolGeometry) -> Vec<T> {
    let p = g.out[0] * g.out[1];
    let mut y = vec![T::ZERO; planes * p];
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.out;
    let tiled = g.tiled(h, w);
    y.par_chunks_mut(p)
        .zip(x.par_chunks(h * w))
        .for_each(|(yp, xp)| {
            if !tiled {
                g.for_each_max(xp, h, w, |o, at| {
                    yp[o] = at.map_or(T::NEG_INFINITY, |i| xp[i]);
                });
                return;
            }
            if g.kernel == [2, 2] {
                for oy in 0..oh {
                    let r0 = xp[2 * oy * w..][..2 * ow].chunks_exact(2);
                    let r1 = xp[(2 * oy + 1) * w..][..2 * ow].chunks_exact(2);
                    for ((o, a), b) in yp[oy * ow..][..ow].iter_mut().zip(r0).zip(r1) {
                        *o = max(max(a[0], a[1]), max(b[0], b[1]));
                    }
                }
                return;
            }
            for oy in 0..oh {
                let out = &mut yp[oy * ow..][..ow];
                for ki in 0..kh {
                    let row = &xp[(oy * kh + ki) * w..][..ow * kw];
                    for (o, win) in out.iter_mut().zip(row.chunks_exact(kw)) {
                        let mut m = if ki == 0 { win[0] } else { max(win[0], *o) };
                        for &v in &win[1..] {
                            m = max(v, m);
                        }
                        *o = m;
                    }
                }
            }
        });
    y
}

fn backward<T: Element>(
    x: &[T],
    y: &[T],
    dy: &[T],
    planes: usize,
    h: usize,
    w: usize,
    g: &PoolGeometry,
) -> Vec<T> {
    let p = g.out[0] * g.out[1];
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.out;
    let tiled = g.tiled(h, w);
    let mut dx = vec![T::ZERO; planes * h * w];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .zip(y.par_chunks(p).zip(dy.par_chunks(p)))
        .for_each_init(
            || vec![false; ow],
            |done, ((dxp, xp), (yp, dyp))| {
                if !tiled {
                    g.for_each_max(xp, h, w, |o, at| {
                        if let Some(i) = at {
                            dxp[i] += dyp[o];
                        }
                    });
                    return;
                }
                // The gradient goes to the first tap (in row-major order) equal to the maximum;
                // every other tap of the window gets 0. Windows do not overlap: plain writes.
                if g.kernel == [2, 2] {
                    for oy in 0..oh {
                        let (top, bottom) = dxp[2 * oy * w..].split_at_mut(w);
                        let d0 = top[..2 * ow].chunks_exact_mut(2);
                        let d1 = bottom[..2 * ow].chunks_exact_mut(2);
                        let r0 = xp[2 * oy * w..][..2 * ow].chunks_exact(2);
                        let r1 = xp[(2 * oy + 1) * w..][..2 * ow].chunks_exact(2);
                        let (ym, gy) = (&yp[oy * ow..][..ow], &dyp[oy * ow..][..ow]);
                        for ((((d0, d1), (a, b)), &m), &gv) in
                            d0.zip(d1).zip(r0.zip(r1)).zip(ym).zip(gy)
                        {
                            let hit_a = a[0] == m;
                            let hit_b = !hit_a & (a[1] == m);
                            let hit_c = !(hit_a | hit_b) & (b[0] == m);
                            let hit_d = !(hit_a | hit_b | hit_c);
                            let pick = |hit: bool| if hit { gv } else { T::ZERO };
                            d0[0] = pick(hit_a);
                            d0[1] = pick(hit_b);
                            d1[0] = pick(hit_c);
                            d1[1] = pick(hit_d);
                        }
                    }
                    return;
                }
                for oy in 0..oh {
                    done.fill(false);
                    let (ym, gy) = (&yp[oy * ow..][..ow], &dyp[oy * ow..][..ow]);
                    for ki in 0..kh {
                        let at = (oy * kh + ki) * w;
                        let row = &xp[at..][..ow * kw];
                        let drow = &mut dxp[at..][..ow * kw];
                        for ox in 0..ow {
                            let (m, gv) = (ym[ox], gy[ox]);
                            let mut d = done[ox];
                            for kj in 0..kw {
                                let hit = !d & (row[ox * kw + kj] == m);
                                drow[ox * kw + kj] = if hit { gv } else { T::ZERO };
                                d |= hit;
                            }
                            done[ox] = d;
                        }
                    }
                }
            },
        );
    dx
}

struct MaxPool(PoolGeometry);
struct MaxPoolBackward(PoolGeometry);

impl PoolGeometry {
    fn check(&self, dims: &[usize]) -> Result<(usize, usize, usize, usize)> {
        let &[n, c, h, w] = dims else {
            candle_core::bail!("MaxPool: expected an N×C×H×W input, got {dims:?}")
        };
        Ok((n, c, h, w))
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "nnzip-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.0.check(l.dims())?;
        let out = match s {
            CpuStorage::F32(x) => CpuStorage::F32(forward(
                contiguous(x, l, "MaxPool: operands")?,
                n * c,
                h,
                w,
                &self.0,
            )),
            CpuStorage::F64(x) => CpuStorage::F64(forward(
                contiguous(x, l, "MaxPool: operands")?,
                n * c,
                h,
                w,
                &self.0,
            )),
            _ => candle_core::bail!("MaxPool: only f32 and f64 are supported"),
        };
        Ok((out, Shape::from((n, c, self.0.out[0], self.0.out[1]))))
    }
    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(
            y,
            &dy.contiguous()?,
            &MaxPoolBackward(self.0),
        )?))
    }
}

impl CustomOp3 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "nnzip-max-pool2d-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.0.check(l1.dims())?;
        let out_dims = [n, c, self.0.out[0], self.0.out[1]];
        if l2.dims() != out_dims || l3.dims() != out_dims {
            candle_core::bail!(
                "MaxPool backward: output {:?} and gradient {:?} for input {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            );
        }
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(y), CpuStorage::F32(dy)) => {
                CpuStorage::F32(backward(
                    contiguous(x, l1, "MaxPool: operands")?,
                    contiguous(y, l2, "MaxPool: operands")?,
                    contiguous(dy, l3, "MaxPool: operands")?,
                    n * c,
                    h,
                    w,
                    &self.0,
                ))
            }
            (CpuStorage::F64(x), CpuStorage::F64(y), CpuStorage::F64(dy)) => {
                CpuStorage::F64(backward(
                    contiguous(x, l1, "MaxPool: operands")?,
                    contiguous(y, l2, "MaxPool: operands")?,
                    contiguous(dy, l3, "MaxPool: operands")?,
                    n * c,
                    h,
                    w,
                    &self.0,
                ))
            }
            _ => candle_core::bail!("MaxPool backward: only f32 and f64 of the same type"),
        };
        Ok((out, Shape::from(l1.dims())))
    }
}

/// 2-D max pooling of `x` (`N×C×H×W`), differentiable.
pub fn max_pool2d(x: &Tensor, geometry: PoolGeometry) -> Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool(geometry))
}
