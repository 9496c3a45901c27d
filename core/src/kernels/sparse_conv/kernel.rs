//! One image: every input plane padded into the scratch buffer (the depthwise kernel's layout
//! and copy), then each output channel's plane as a sum of its kept weights, each a weight
//! times the padded input shifted by its tap (Park et al.'s direct sparse convolution).
//!
//! Outputs are computed [`JOBS`] vectors at a time (a vector being up to `LANES` adjacent points
//! of one output row), each with its own accumulator: one pass over an output channel's kept
//! weights serves eight vectors (LeNet-5's 8×8 second layer is one pass with AVX2), and the
//! multiply-add units are not kept waiting on one accumulator.

use super::taps::{KeptTaps, split};
use crate::kernels::depthwise::geometry::{MAX_LANES, PaddedLayout};
use crate::kernels::depthwise::plane::fill;
use crate::kernels::depthwise::simd::{Lanes, Portable};
use tract_core::internal::*;

/// Output vectors computed together.
const JOBS: usize = 8;

/// Which implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// Plain Rust, four lanes (NEON's layout): what a CPU without a vector kernel runs.
    Portable,
    /// x86_64 AVX2 with FMA, eight lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// aarch64 NEON, four lanes.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Path {
    /// The vector implementation this CPU runs, or the portable one.
    pub fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Path::Avx2Fma;
        }
        #[cfg(target_arch = "aarch64")]
        return Path::Neon;
        #[allow(unreachable_code)]
        Path::Portable
    }

    /// Its name, as the sparse matrix product names its kernels.
    pub fn name(self) -> &'static str {
        match self {
            Path::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => "avx2+fma",
            #[cfg(target_arch = "aarch64")]
            Path::Neon => "neon",
        }
    }
}

/// What one image's convolution reads and writes.
pub(super) struct Image<'a> {
    pub layout: &'a PaddedLayout,
    pub taps: &'a KeptTaps,
    /// One value per output channel.
    pub bias: &'a [f32],
    pub clamp: Option<(f32, f32)>,
    /// The input planes (`inputs · h · w` values).
    pub src: &'a [f32],
    /// `inputs · layout.scratch_len()` values, zero wherever the copy does not write.
    pub scratch: &'a mut [f32],
    /// The output planes (`outputs · oh · ow` values).
    pub out: &'a mut [f32],
}

/// Runs one image on `path`, which must be one this CPU runs ([`Path::best`] or portable); an
/// error where the buffers are not the sizes of the layout and the kernel.
pub(super) fn run(path: Path, image: Image) -> TractResult<()> {
    let shape = &image.layout.shape;
    let inputs = image.taps.inputs();
    ensure!(
        image.src.len() == inputs * shape.h * shape.w
            && image.scratch.len() == inputs * image.layout.scratch_len()
            && image.out.len() == image.taps.outputs() * shape.oh * shape.ow
            && image.bias.len() == image.taps.outputs(),
        "sparse convolution buffers do not match their layout"
    );
    // SAFETY: the sizes are checked above, the offsets by `KeptTaps::build`, and `path` names
    // an implementation this CPU has (the caller's contract).
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx2Fma => run_avx2_fma(image),
            #[cfg(target_arch = "aarch64")]
            Path::Neon => image_with::<crate::kernels::depthwise::simd::Neon>(image),
            _ => image_with::<Portable>(image),
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2_fma(image: Image) {
    unsafe { image_with::<crate::kernels::depthwise::simd::Avx2Fma>(image) }
}

/// Pads every input plane, then computes each output channel.
///
/// # Safety
/// As [`run`] checks; the CPU has `L`'s instructions.
#[inline(always)]
unsafe fn image_with<L: Lanes>(image: Image) {
    let Image {
        layout,
        taps,
        bias,
        clamp,
        src,
        scratch,
        out,
    } = image;
    let (plane, shape) = (layout.scratch_len(), &layout.shape);
    let in_plane = shape.h * shape.w;
    for (src, scratch) in src
        .chunks_exact(in_plane)
        .zip(scratch.chunks_exact_mut(plane))
    {
        fill::<L>(layout, scratch, src);
    }
    let out_plane = shape.oh * shape.ow;
    for (o, out) in out.chunks_exact_mut(out_plane).enumerate() {
        let (words, scale) = taps.output(o);
        unsafe {
            output_plane::<L>(
                layout,
                scratch,
                words,
                taps.codebook(),
                (scale, bias[o]),
                clamp,
                out,
            )
        };
    }
}

/// One output channel's plane: `scale · Σ w · shifted input + bias`, clamped.
///
/// # Safety
/// Every word's offset, plus the farthest job's base, plus `L::LANES`, is within `scratch`;
/// every index within `codebook`; `out` holds `oh · ow` values.
#[inline(always)]
unsafe fn output_plane<L: Lanes>(
    layout: &PaddedLayout,
    scratch: &[f32],
    words: &[u32],
    codebook: &[f32],
    (scale, bias): (f32, f32),
    clamp: Option<(f32, f32)>,
    out: &mut [f32],
) {
    let shape = &layout.shape;
    let vectors = shape.ow.div_ceil(L::LANES);
    let jobs = shape.oh * vectors;
    let row_step = shape.strides[0] * layout.pitch;
    // (input base in the scratch, output offset, lanes) of job `q`.
    let job = |q: usize| -> (usize, usize, usize) {
        let (oy, v) = (q / vectors, q % vectors);
        let x = v * L::LANES;
        (
            oy * row_step + x,
            oy * shape.ow + x,
            L::LANES.min(shape.ow - x),
        )
    };
    let base = scratch.as_ptr();
    let dst = out.as_mut_ptr();
    unsafe {
        let (scalev, biasv) = (L::splat(scale), L::splat(bias));
        let mut q = 0;
        while q < jobs {
            // The last group repeats the plane's last vector where it runs short.
            let group: [(usize, usize, usize); JOBS] =
                std::array::from_fn(|j| job((q + j).min(jobs - 1)));
            let p: [*const f32; JOBS] = std::array::from_fn(|j| base.add(group[j].0));
            let mut acc = [L::splat(0.0); JOBS];
            for &word in words {
                let (off, index) = split(word);
                let k = L::splat(*codebook.get_unchecked(index));
                // Spelled out, as in the depthwise kernel: at opt-level "z" a loop over the
                // jobs stays a loop and the accumulators live in memory.
                acc[0] = L::mul_add(acc[0], L::load(p[0].add(off)), k);
                acc[1] = L::mul_add(acc[1], L::load(p[1].add(off)), k);
                acc[2] = L::mul_add(acc[2], L::load(p[2].add(off)), k);
                acc[3] = L::mul_add(acc[3], L::load(p[3].add(off)), k);
                acc[4] = L::mul_add(acc[4], L::load(p[4].add(off)), k);
                acc[5] = L::mul_add(acc[5], L::load(p[5].add(off)), k);
                acc[6] = L::mul_add(acc[6], L::load(p[6].add(off)), k);
                acc[7] = L::mul_add(acc[7], L::load(p[7].add(off)), k);
            }
            for (j, &(_, o, lanes)) in group.iter().enumerate() {
                let mut v = L::mul_add(biasv, acc[j], scalev);
                if let Some((low, high)) = clamp {
                    v = L::clamp(v, L::splat(low), L::splat(high));
                }
                if lanes == L::LANES {
                    L::store(dst.add(o), v);
                } else {
                    let mut tail = [0f32; MAX_LANES];
                    L::store(tail.as_mut_ptr(), v);
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), dst.add(o), lanes);
                }
            }
            q += JOBS;
        }
    }
}
