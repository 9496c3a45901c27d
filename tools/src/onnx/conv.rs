//! 2-D convolution as a candle custom op: im2col + gemm forward, and backward passes for the input
//! (gemm + col2im) and the weights (im2col + gemm), parallel over the batch.
//!
//! Supports everything ONNX `Conv` needs for images: groups (incl. depthwise), per-axis strides and
//! dilations, asymmetric padding. candle's own `conv2d` takes one stride/dilation/padding for both
//! axes and its backward pass is several times slower than PyTorch's.

use super::contiguous;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;
use std::thread::LocalKey;

/// How a convolution slides over its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Zero padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Step `[vertical, horizontal]`.
    pub strides: [usize; 2],
    /// Kernel dilation `[vertical, horizontal]`.
    pub dilations: [usize; 2],
    /// Number of channel groups (input channels = groups × kernel channels).
    pub groups: usize,
}

impl Default for ConvGeometry {
    fn default() -> Self {
        ConvGeometry {
            pads: [0; 4],
            strides: [1, 1],
            dilations: [1, 1],
            groups: 1,
        }
    }
}

/// All sizes of one convolution.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    m: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    /// Input channels per group.
    cg: usize,
    /// Output channels per group.
    mg: usize,
}

impl Sizes {
    /// Rows of the im2col matrix (`cg·kh·kw`).
    fn k(&self) -> usize {
        self.cg * self.kh * self.kw
    }
    /// Output pixels per channel.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
}

impl ConvGeometry {
    fn sizes(&self, x: &[usize], w: &[usize]) -> Result<Sizes> {
        let (&[n, c, h, wd], &[m, cg, kh, kw]) = (x, w) else {
            candle_core::bail!("Conv: expected a 4-D input and kernel, got {x:?} and {w:?}")
        };
        let groups = self.groups.max(1);
        if c != cg * groups || m % groups != 0 {
            candle_core::bail!("Conv: input {x:?} and kernel {w:?} do not fit group={groups}");
        }
        let span_h = (kh - 1) * self.dilations[0] + 1;
        let span_w = (kw - 1) * self.dilations[1] + 1;
        let (ph, pw) = (
            h + self.pads[0] + self.pads[2],
            wd + self.pads[1] + self.pads[3],
        );
        if ph < span_h || pw < span_w {
            candle_core::bail!(
                "Conv: kernel {kh}x{kw} (dilated {span_h}x{span_w}) larger than padded input {ph}x{pw}"
            );
        }
        let oh = (ph - span_h) / self.strides[0] + 1;
        let ow = (pw - span_w) / self.strides[1] + 1;
        Ok(Sizes {
            n,
            c,
            h,
            w: wd,
            m,
            kh,
            kw,
            oh,
            ow,
            cg,
            mg: m / groups,
        })
    }
}

/// Element types the kernels run on.
trait Element:
    Copy + Send + Sync + 'static + std::ops::AddAssign + std::ops::Add<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    /// This thread's work buffers for this type.
    fn scratch() -> &'static LocalKey<Scratch<Self>>;
}
impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn scratch() -> &'static LocalKey<Scratch<Self>> {
        thread_local!(static SCRATCH: Scratch<f32> = RefCell::default());
        &SCRATCH
    }
}
impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn scratch() -> &'static LocalKey<Scratch<Self>> {
        thread_local!(static SCRATCH: Scratch<f64> = RefCell::default());
        &SCRATCH
    }
}

/// Two per-thread work matrices (an im2col block, a block of `dy` or of the output).
type Scratch<T> = RefCell<(Vec<T>, Vec<T>)>;

/// Runs `f` on two work buffers of `lens` elements, kept per thread between calls: the im2col
/// block of LeNet-5's second conv is 2 MB, and allocating and zeroing it anew for every call
/// (page faults included) cost ~5% of a training step. The contents are stale: every kernel
/// writes each element it reads.
fn with_scratch<T: Element, R>(lens: [usize; 2], f: impl FnOnce(&mut [T], &mut [T]) -> R) -> R {
    T::scratch().with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            for (buf, &len) in [&mut *a, &mut *b].into_iter().zip(&lens) {
                if buf.len() < len {
                    buf.resize(len, T::ZERO);
                }
            }
            f(&mut a[..lens[0]], &mut b[..lens[1]])
        }
        // Re-entered on this thread (not expected: the kernels call no rayon inside): fresh buffers.
        Err(_) => f(&mut vec![T::ZERO; lens[0]], &mut vec![T::ZERO; lens[1]]),
    })
}

/// The output positions `lo..hi` along an axis whose tap `k` lands inside the input (`len`), and
/// the input index of output position `lo`: `ix(o) = first + (o − lo)·stride`.
#[inline]
fn valid_range(
    out_len: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> (usize, usize, usize) {
    let offset = (k * dilation) as isize - pad as isize; // ix = o·stride + offset
    let stride_i = stride as isize;
    // smallest o with o·stride + offset ≥ 0
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset + stride_i - 1) / stride_i) as usize
    };
    // largest o with o·stride + offset ≤ len − 1, plus one
    let last = len as isize - 1 - offset;
    let hi = if last < 0 {
        0
    } else {
        ((last / stride_i) as usize + 1).min(out_len)
    };
    let lo = lo.min(hi);
    let first = (lo as isize * stride_i + offset).max(0) as usize;
    (lo, hi, first)
}

/// Unfolds one group of one sample (`cg × h × w`) into a block of columns of the im2col matrix:
/// row `r` (`cg·kh·kw` rows) of the block is `col[r·ld..r·ld + oh·ow]`.
fn im2col<T: Element>(x: &[T], s: &Sizes, g: &ConvGeometry, col: &mut [T], ld: usize) {
    let p = s.p();
    let (sy, sx) = (g.strides[0], g.strides[1]);
    for c in 0..s.cg {
        let plane = &x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for ki in 0..s.kh {
            let (ylo, yhi, iy0) = valid_range(s.oh, ki, sy, g.dilations[0], g.pads[0], s.h);
            for kj in 0..s.kw {
                let (xlo, xhi, ix0) = valid_range(s.ow, kj, sx, g.dilations[1], g.pads[1], s.w);
                let row = &mut col[((c * s.kh + ki) * s.kw + kj) * ld..][..p];
                row[..ylo * s.ow].fill(T::ZERO);
                row[yhi * s.ow..].fill(T::ZERO);
                for oy in ylo..yhi {
                    let iy = iy0 + (oy - ylo) * sy;
                    let line = &plane[iy * s.w..(iy + 1) * s.w];
                    let out = &mut row[oy * s.ow..(oy + 1) * s.ow];
                    out[..xlo].fill(T::ZERO);
                    out[xhi..].fill(T::ZERO);
                    let n = xhi - xlo;
                    if sx == 1 {
                        out[xlo..xhi].copy_from_slice(&line[ix0..ix0 + n]);
                    } else {
                        for (j, v) in out[xlo..xhi].iter_mut().enumerate() {
                            *v = line[ix0 + j * sx];
                        }
                    }
                }
            }
        }
    }
}

/// Folds a block of columns (laid out as [`im2col`] writes them) back onto one group of one
/// sample, accumulating.
fn col2im<T: Element>(col: &[T], ld: usize, s: &Sizes, g: &ConvGeometry, x: &mut [T]) {
    let p = s.p();
    let (sy, sx) = (g.strides[0], g.strides[1]);
    for c in 0..s.cg {
        let plane = &mut x[c * s.h * s.w..(c + 1) * s.h * s.w];
        for ki in 0..s.kh {
            let (ylo, yhi, iy0) = valid_range(s.oh, ki, sy, g.dilations[0], g.pads[0], s.h);
            for kj in 0..s.kw {
                let (xlo, xhi, ix0) = valid_range(s.ow, kj, sx, g.dilations[1], g.pads[1], s.w);
                let row = &col[((c * s.kh + ki) * s.kw + kj) * ld..][..p];
                for oy in ylo..yhi {
                    let iy = iy0 + (oy - ylo) * sy;
                    let line = &mut plane[iy * s.w..(iy + 1) * s.w];
                    let src = &row[oy * s.ow + xlo..oy * s.ow + xhi];
                    if sx == 1 {
                        for (d, &v) in line[ix0..ix0 + src.len()].iter_mut().zip(src) {
                            *d += v;
                        }
                    } else {
                        for (j, &v) in src.iter().enumerate() {
                            line[ix0 + j * sx] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Row-major matrix view: pointer, column stride, row stride.
#[derive(Clone, Copy)]
struct Mat<T> {
    ptr: *const T,
    cs: isize,
    rs: isize,
}

/// `dst[m×n] (row-major) = (accumulate ? dst : 0) + lhs[m×k] · rhs[k×n]`, single-threaded.
fn matmul<T: Element>(
    dst: &mut [T],
    m: usize,
    n: usize,
    k: usize,
    lhs: Mat<T>,
    rhs: Mat<T>,
    accumulate: bool,
) {
    assert!(dst.len() >= m * n);
    // SAFETY: the callers pass views whose extents (m×k, k×n) lie inside live slices, and `dst`
    // holds m×n elements as asserted.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Output pixels (im2col columns) one gemm covers. Per-sample matrices are small (LeNet-5's second
/// conv: 50×500 · 500×64), and the gemm microkernel spends most of its time packing and on edges;
/// stacking a few samples side by side gives each gemm ~1k columns; the exact width matters little
/// (docs/PERFORMANCE.md).
const BLOCK_COLUMNS: usize = 1024;

/// Samples per block: enough for [`BLOCK_COLUMNS`] columns, but no fewer blocks than threads.
fn block_samples(s: &Sizes) -> usize {
    let threads = rayon::current_num_threads().max(1);
    (BLOCK_COLUMNS / s.p().max(1))
        .min(s.n.div_ceil(threads))
        .max(1)
}

/// Sum of `v` in 8 interleaved partial sums (vectorised; a single running sum is a serial chain
/// of dependent additions).
fn sum<T: Element>(v: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let mut total = T::ZERO;
    for a in acc.into_iter().chain(rest.iter().copied()) {
        total += a;
    }
    total
}

/// `col[k × nb·p]` = the im2col columns of group `grp` of samples `n0..n0 + nb`, side by side.
fn unfold_block<T: Element>(
    x: &[T],
    s: &Sizes,
    g: &ConvGeometry,
    grp: usize,
    n0: usize,
    nb: usize,
    col: &mut [T],
) {
    let p = s.p();
    let (chw, ghw) = (s.c * s.h * s.w, s.cg * s.h * s.w);
    for j in 0..nb {
        im2col(
            &x[(n0 + j) * chw + grp * ghw..],
            s,
            g,
            &mut col[j * p..],
            nb * p,
        );
    }
}

/// `dyt[mg × nb·p]` = output channels `grp·mg..` of samples `n0..n0 + nb` side by side.
fn gather_dy<T: Element>(dy: &[T], s: &Sizes, grp: usize, n0: usize, nb: usize, dyt: &mut [T]) {
    let p = s.p();
    let ld = nb * p;
    for j in 0..nb {
        for m in 0..s.mg {
            dyt[m * ld + j * p..][..p]
                .copy_from_slice(&dy[((n0 + j) * s.m + grp * s.mg + m) * p..][..p]);
        }
    }
}

fn forward<T: Element>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    s: &Sizes,
    g: &ConvGeometry,
) -> Vec<T> {
    let (k, p) = (s.k(), s.p());
    let nb = block_samples(s);
    let mut out = vec![T::ZERO; s.n * s.m * p];
    out.par_chunks_mut(nb * s.m * p)
        .enumerate()
        .for_each(|(b, y)| {
            let n0 = b * nb;
            let nb = y.len() / (s.m * p);
            let ld = nb * p;
            with_scratch([k * ld, s.mg * ld], |col, tmp| {
                for grp in 0..g.groups {
                    unfold_block(x, s, g, grp, n0, nb, col);
                    // tmp[mg × nb·p] = W_g[mg×k] · col[k × nb·p]
                    let lhs = Mat {
                        ptr: w[grp * s.mg * k..].as_ptr(),
                        cs: 1,
                        rs: k as isize,
                    };
                    let rhs = Mat {
                        ptr: col.as_ptr(),
                        cs: 1,
                        rs: ld as isize,
                    };
                    matmul(tmp, s.mg, ld, k, lhs, rhs, false);
                    // Scatter back to N×M×P, adding the bias on the way.
                    for j in 0..nb {
                        for m in 0..s.mg {
                            let ch = grp * s.mg + m;
                            let dst = &mut y[(j * s.m + ch) * p..][..p];
                            let src = &tmp[m * ld + j * p..][..p];
                            match bias {
                                Some(b) => {
                                    for (d, &v) in dst.iter_mut().zip(src) {
                                        *d = v + b[ch];
                                    }
                                }
                                None => dst.copy_from_slice(src),
                            }
                        }
                    }
                }
            })
        });
    out
}

fn backward_input<T: Element>(dy: &[T], w: &[T], s: &Sizes, g: &ConvGeometry) -> Vec<T> {
    let (k, p) = (s.k(), s.p());
    let (chw, ghw) = (s.c * s.h * s.w, s.cg * s.h * s.w);
    let nb = block_samples(s);
    let mut dx = vec![T::ZERO; s.n * chw];
    dx.par_chunks_mut(nb * chw)
        .enumerate()
        .for_each(|(b, dxb)| {
            let n0 = b * nb;
            let nb = dxb.len() / chw;
            let ld = nb * p;
            with_scratch([k * ld, s.mg * ld], |dcol, dyt| {
                for grp in 0..g.groups {
                    gather_dy(dy, s, grp, n0, nb, dyt);
                    // dcol[k × nb·p] = W_gᵀ[k×mg] · dyt[mg × nb·p]
                    let lhs = Mat {
                        ptr: w[grp * s.mg * k..].as_ptr(),
                        cs: k as isize,
                        rs: 1,
                    };
                    let rhs = Mat {
                        ptr: dyt.as_ptr(),
                        cs: 1,
                        rs: ld as isize,
                    };
                    matmul(dcol, k, ld, s.mg, lhs, rhs, false);
                    for j in 0..nb {
                        col2im(&dcol[j * p..], ld, s, g, &mut dxb[j * chw + grp * ghw..]);
                    }
                }
            })
        });
    dx
}

/// The kernel gradient `M × k`, followed (with `bias`) by the bias gradient `M`: one pass over
/// `dy` gives both, instead of a separate candle `sum_keepdim` over N, H, W for the bias.
fn backward_weight<T: Element>(
    x: &[T],
    dy: &[T],
    s: &Sizes,
    g: &ConvGeometry,
    bias: bool,
) -> Vec<T> {
    let (k, p) = (s.k(), s.p());
    let nb = block_samples(s);
    let blocks = s.n.div_ceil(nb);
    let parts = rayon::current_num_threads().clamp(1, blocks.max(1));
    let partials: Vec<(Vec<T>, Vec<T>)> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let mut dw = vec![T::ZERO; s.m * k];
            let mut db = vec![T::ZERO; if bias { s.m } else { 0 }];
            for b in (part..blocks).step_by(parts) {
                let n0 = b * nb;
                let nb = nb.min(s.n - n0);
                let ld = nb * p;
                with_scratch([k * ld, s.mg * ld], |col, dyt| {
                    for grp in 0..g.groups {
                        unfold_block(x, s, g, grp, n0, nb, col);
                        gather_dy(dy, s, grp, n0, nb, dyt);
                        // dW_g[mg×k] += dyt[mg × nb·p] · colᵀ[nb·p × k]
                        let lhs = Mat {
                            ptr: dyt.as_ptr(),
                            cs: 1,
                            rs: ld as isize,
                        };
                        let rhs = Mat {
                            ptr: col.as_ptr(),
                            cs: ld as isize,
                            rs: 1,
                        };
                        matmul(
                            &mut dw[grp * s.mg * k..(grp + 1) * s.mg * k],
                            s.mg,
                            k,
                            ld,
                            lhs,
                            rhs,
                            true,
                        );
                        if bias {
                            for m in 0..s.mg {
                                db[grp * s.mg + m] += sum(&dyt[m * ld..(m + 1) * ld]);
                            }
                        }
                    }
                })
            }
            (dw, db)
        })
        .collect();
    let mut total = vec![T::ZERO; s.m * k + if bias { s.m } else { 0 }];
    for (dw, db) in partials {
        for (t, v) in total.iter_mut().zip(dw.into_iter().chain(db)) {
            *t += v;
        }
    }
    total
}

/// Runs `f` on two CPU storages of the same float type.
macro_rules! dispatch {
    ($name:literal, $s1:expr, $l1:expr, $s2:expr, $l2:expr, |$a:ident, $b:ident| $body:expr) => {
        match ($s1, $s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let $a = contiguous(a, $l1, "Conv: first operand")?;
                let $b = contiguous(b, $l2, "Conv: second operand")?;
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b)) => {
                let $a = contiguous(a, $l1, "Conv: first operand")?;
                let $b = contiguous(b, $l2, "Conv: second operand")?;
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!(
                "{}: only f32 and f64 operands of the same type are supported",
                $name
            ),
        }
    };
}

/// Runs `f` on three CPU storages of the same float type.
macro_rules! dispatch3 {
    ($name:literal, $s1:expr, $l1:expr, $s2:expr, $l2:expr, $s3:expr, $l3:expr, |$a:ident, $b:ident, $c:ident| $body:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)) => {
                let $a = contiguous(a, $l1, "Conv: first operand")?;
                let $b = contiguous(b, $l2, "Conv: second operand")?;
                let $c = contiguous(c, $l3, "Conv: third operand")?;
                CpuStorage::F32($body)
            }
            (CpuStorage::F64(a), CpuStorage::F64(b), CpuStorage::F64(c)) => {
                let $a = contiguous(a, $l1, "Conv: first operand")?;
                let $b = contiguous(b, $l2, "Conv: second operand")?;
                let $c = contiguous(c, $l3, "Conv: third operand")?;
                CpuStorage::F64($body)
            }
            _ => candle_core::bail!(
                "{}: only f32 and f64 operands of the same type are supported",
                $name
            ),
        }
    };
}

/// Convolution without bias: `(x, kernel)`.
struct Conv2d(ConvGeometry);
/// Convolution with the bias added in the same pass: `(x, kernel, bias)`.
struct Conv2dBias(ConvGeometry);
struct Conv2dBackwardInput {
    geometry: ConvGeometry,
    input_dims: [usize; 4],
}
/// `(x, dy)` → the kernel gradient (`M·k` values) followed, with `bias`, by the bias gradient
/// (`M`), as one flat vector.
struct Conv2dBackwardWeight {
    geometry: ConvGeometry,
    kernel_dims: [usize; 4],
    bias: bool,
}

/// Gradients of a convolution w.r.t. its input (when tracked), kernel and (with `bias`) bias.
fn conv_backward(
    geometry: ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    bias: bool,
) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    let dy = dy.contiguous()?;
    let input_dims = dims4(x)?;
    let kernel_dims = dims4(w)?;
    // The first layer's input is data: no gradient needed, skip the col2im pass.
    let dx = if x.track_op() {
        Some(dy.apply_op2_no_bwd(
            w,
            &Conv2dBackwardInput {
                geometry,
                input_dims,
            },
        )?)
    } else {
        None
    };
    let both = x.apply_op2_no_bwd(
        &dy,
        &Conv2dBackwardWeight {
            geometry,
            kernel_dims,
            bias,
        },
    )?;
    let mk = kernel_dims.iter().product();
    if !bias {
        return Ok((dx, both.reshape(kernel_dims.to_vec())?, None));
    }
    let dw = both.narrow(0, 0, mk)?.reshape(kernel_dims.to_vec())?;
    let db = both.narrow(0, mk, kernel_dims[0])?;
    Ok((dx, dw, Some(db)))
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "nnzip-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.0.sizes(l1.dims(), l2.dims())?;
        let out = dispatch!("Conv", s1, l1, s2, l2, |x, w| forward(
            x, w, None, &s, &self.0
        ));
        Ok((out, Shape::from((s.n, s.m, s.oh, s.ow))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = conv_backward(self.0, x, w, dy, false)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for Conv2dBias {
    fn name(&self) -> &'static str {
        "nnzip-conv2d-bias"
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
        let s = self.0.sizes(l1.dims(), l2.dims())?;
        if l3.dims() != [s.m] {
            candle_core::bail!("Conv: bias {:?} for {} output channels", l3.dims(), s.m);
        }
        let out = dispatch3!("Conv", s1, l1, s2, l2, s3, l3, |x, w, b| forward(
            x,
            w,
            Some(b),
            &s,
            &self.0
        ));
        Ok((out, Shape::from((s.n, s.m, s.oh, s.ow))))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = conv_backward(self.0, x, w, dy, true)?;
        Ok((dx, Some(dw), db))
    }
}

impl CustomOp2 for Conv2dBackwardInput {
    fn name(&self) -> &'static str {
        "nnzip-conv2d-backward-input"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.geometry.sizes(&self.input_dims, l2.dims())?;
        let out = dispatch!("Conv backward", s1, l1, s2, l2, |dy, w| backward_input(
            dy,
            w,
            &s,
            &self.geometry
        ));
        Ok((out, Shape::from(self.input_dims.to_vec())))
    }
}

impl CustomOp2 for Conv2dBackwardWeight {
    fn name(&self) -> &'static str {
        "nnzip-conv2d-backward-weight"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.geometry.sizes(l1.dims(), &self.kernel_dims)?;
        let out = dispatch!("Conv backward", s1, l1, s2, l2, |x, dy| backward_weight(
            x,
            dy,
            &s,
            &self.geometry,
            self.bias
        ));
        let len = s.m * s.k() + if self.bias { s.m } else { 0 };
        Ok((out, Shape::from(len)))
    }
}

fn dims4(t: &Tensor) -> Result<[usize; 4]> {
    let (a, b, c, d) = t.dims4()?;
    Ok([a, b, c, d])
}

/// 2-D convolution of `x` (`N×C×H×W`) with `kernel` (`M×C/groups×kh×kw`) plus an optional `bias`
/// (`M`), differentiable in all three.
pub fn conv2d(
    x: &Tensor,
    kernel: &Tensor,
    bias: Option<&Tensor>,
    geometry: ConvGeometry,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let kernel = kernel.contiguous()?;
    match bias {
        Some(b) => x.apply_op3(
            &kernel,
            &b.flatten_all()?.contiguous()?,
            Conv2dBias(geometry),
        ),
        None => x.apply_op2(&kernel, Conv2d(geometry)),
    }
}
