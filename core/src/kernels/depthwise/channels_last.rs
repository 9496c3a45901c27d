//! The operator running depthwise convolutions of channel-last data (NHWC or HWC) on
//! [`channel_runs`](super::channel_runs).

use super::channel_runs::{self, ChannelsLastLayout, Weights};
use super::{Clamp, PlaneShape, clamped};
use tract_core::internal::*;
use tract_core::tract_linalg::multithread::par_chunks_mut;

/// The operator: a depthwise convolution of channel-last data with its kernel (tap-major) and
/// bias held as constants, and the clamp of the operators it took the place of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelsLastDepthwise {
    layout: ChannelsLastLayout,
    /// Whether the data has a batch axis (NHWC) or not (HWC).
    batch_axis: bool,
    /// For each tap in kernel order, its weight for every channel.
    kernel: Arc<Tensor>,
    /// One value per channel.
    bias: Arc<Tensor>,
    clamp: Option<Clamp>,
    /// Runs the plain-Rust four-lane kernel even where a vector one exists.
    portable: bool,
}

impl ChannelsLastDepthwise {
    /// Bytes of weights it holds: the kernel and the bias.
    pub fn bytes(&self) -> usize {
        crate::kernels::tensor_bytes(&[&self.kernel, &self.bias])
    }

    /// The operator for `channels` channels of planes of `shape`, with `kernel` holding for
    /// each of the `kh · kw` taps its weight for every channel and `bias` one value per channel;
    /// `None` where the convolution is not one the kernel takes (see
    /// [`ChannelsLastLayout::new`]: fewer channels than the widest vector, or sizes that
    /// overflow).
    pub fn new(
        shape: PlaneShape,
        channels: usize,
        batch_axis: bool,
        kernel: &[f32],
        bias: &[f32],
        clamp: Option<Clamp>,
        portable: bool,
    ) -> TractResult<Option<ChannelsLastDepthwise>> {
        let Some(layout) = ChannelsLastLayout::new(shape, channels) else {
            return Ok(None);
        };
        ensure!(
            kernel.len() == channels * layout.taps() && bias.len() == channels,
            "depthwise weights: {} taps and {} biases for {channels} channels of {} taps",
            kernel.len(),
            bias.len(),
            layout.taps()
        );
        Ok(Some(ChannelsLastDepthwise {
            layout,
            batch_axis,
            kernel: Tensor::from_shape(&[kernel.len()], kernel)?.into_arc_tensor(),
            bias: Tensor::from_shape(&[channels], bias)?.into_arc_tensor(),
            clamp,
            portable,
        }))
    }

    /// The images in `input_shape`, checked against the plane and channels this op was built
    /// for.
    fn images(&self, input_shape: &[usize]) -> TractResult<usize> {
        let shape = &self.layout.shape;
        let point_axes = [shape.h, shape.w, self.layout.channels];
        let (n, hwc) = if self.batch_axis {
            ensure!(
                input_shape.len() == 4,
                "depthwise input of rank {}",
                input_shape.len()
            );
            (input_shape[0], &input_shape[1..])
        } else {
            (1, input_shape)
        };
        ensure!(
            hwc == point_axes,
            "depthwise convolution built for {point_axes:?} images, got input {input_shape:?}"
        );
        Ok(n)
    }

    fn output_shape<D: Clone + From<usize>>(&self, n: Option<D>) -> TVec<D> {
        let shape = &self.layout.shape;
        let mut out: TVec<D> = n.into_iter().collect();
        out.extend([shape.oh, shape.ow, self.layout.channels].map(D::from));
        out
    }

    fn eval_f32(&self, input: &Tensor) -> TractResult<Tensor> {
        let n = self.images(input.shape())?;
        let shape = &self.layout.shape;
        let c = self.layout.channels;
        let (in_image, out_row) = (shape.h * shape.w * c, shape.ow * c);
        let out_shape = self.output_shape(self.batch_axis.then_some(n));
        // SAFETY: f32 has no invalid bit patterns, and every output is written below.
        let mut output = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        if n == 0 || shape.oh == 0 || out_row == 0 {
            return Ok(output);
        }
        let input = input.try_as_plain_ram()?;
        let input = input.as_slice::<f32>()?;
        ensure!(input.len() == n * in_image);
        let kernel = self.kernel.try_as_plain_ram()?;
        let bias = self.bias.try_as_plain_ram()?;
        let weights = Weights {
            taps: kernel.as_slice::<f32>()?,
            bias: bias.as_slice::<f32>()?,
            clamp: self.clamp.map(|c| (c.low, c.high)),
        };
        let run = if self.portable {
            channel_runs::rows_portable
        } else {
            channel_runs::best_for_this_cpu(self.layout.channels).1
        };
        let cost = shape.oh * out_row * self.layout.taps();
        let mut output_ram = output.try_as_plain_ram_mut()?;
        let images = output_ram.as_slice_mut::<f32>()?;
        for (image, out) in input
            .chunks_exact(in_image)
            .zip(images.chunks_exact_mut(shape.oh * out_row))
        {
            par_chunks_mut(out, out_row, cost, |first_row, rows| {
                // SAFETY: the weights were checked against the layout by `new`, `image` is one
                // image's input and `rows` whole output rows (checked above); `run` is an
                // implementation this CPU runs.
                unsafe { run(&self.layout, &weights, image, rows, first_row) };
                Ok(())
            })?;
        }
        Ok(output)
    }
}

impl Op for ChannelsLastDepthwise {
    fn name(&self) -> StaticName {
        "NnzipChannelsLastDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let kernel = if self.portable {
            "portable kernel".to_string()
        } else {
            format!(
                "vector kernel ({})",
                channel_runs::best_for_this_cpu(self.layout.channels).0
            )
        };
        Ok(vec![
            format!(
                "{} channels, {:?}{}",
                self.layout.channels,
                self.layout.shape,
                clamped(self.clamp)
            ),
            kernel,
        ])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for ChannelsLastDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type(),
            "the channel-last depthwise convolution takes f32, got {:?}",
            input.datum_type()
        );
        Ok(tvec!(self.eval_f32(&input)?.into_tvalue()))
    }
}

impl TypedOp for ChannelsLastDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        let n = self.batch_axis.then(|| inputs[0].shape[0].clone());
        Ok(tvec!(f32::fact(self.output_shape::<TDim>(n))))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let n = if self.batch_axis {
            inputs[0].shape[0].clone()
        } else {
            1.into()
        };
        let shape = &self.layout.shape;
        let per_image = self.layout.channels * shape.oh * shape.ow * self.layout.taps();
        Ok(tvec!((Cost::FMA(f32::datum_type()), n * per_image)))
    }

    as_op!();
}
