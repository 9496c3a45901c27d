//! Builds the classic Deep Compression networks, and a small mobile-style network with the
//! operators of phone models, as ONNX models, randomly initialised.

use super::proto::{self, float_tensor, float_value_info, int_attr, ints_attr, node};
use nnzip_core::onnx::proto::{GraphProto, ModelProto, NodeProto, TensorProto};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Name of the image input of models built here.
pub const INPUT: &str = "input";
/// Name of the logits output of models built here.
pub const OUTPUT: &str = "logits";

/// The architectures `nnzip init` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Architecture {
    /// LeNet-300-100: Flatten, fully connected 784-300-100-10 with ReLU.
    Lenet300,
    /// LeNet-5 (Caffe variant): conv 20@5×5, max-pool 2, conv 50@5×5, max-pool 2, fc 500, ReLU, fc 10.
    Lenet5,
    /// A MobileNetV2-style network for 28×28 images (≈ 22k weights): a stride-2 3×3 stem, four
    /// inverted residual blocks (1×1 expansion, 3×3 or 5×5 depthwise convolution, 1×1 projection, each
    /// followed by BatchNormalization, ReLU6 as Clip(0, 6) after the first two; residual Add where
    /// the shape allows; stride-2 depthwise layers padded asymmetrically as TensorFlow's "SAME"
    /// exports are), a 1×1 head, GlobalAveragePool, Flatten and Gemm: the operators of phone
    /// models on a data set that trains in minutes.
    MobileTiny,
}

/// Initial weights drawn like PyTorch's default for `Linear`/`Conv2d`: Kaiming-uniform with
/// `a = √5`, i.e. weights and biases uniform in `±1/√fan_in`.
struct Init {
    rng: StdRng,
    initializers: Vec<TensorProto>,
}

impl Init {
    fn uniform(&mut self, name: &str, dims: &[usize], fan_in: usize) {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let count = dims.iter().product();
        let values: Vec<f32> = (0..count)
            .map(|_| self.rng.random_range(-bound..bound))
            .collect();
        self.initializers.push(float_tensor(name, dims, &values));
    }

    /// A fully connected layer `out × in` (Gemm with transB = 1, as PyTorch exports it).
    fn gemm(
        &mut self,
        name: &str,
        input: &str,
        output: &str,
        fan_in: usize,
        out: usize,
    ) -> NodeProto {
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        self.uniform(&w, &[out, fan_in], fan_in);
        self.uniform(&b, &[out], fan_in);
        node(
            "Gemm",
            name,
            &[input, &w, &b],
            &[output],
            vec![int_attr("transB", 1)],
        )
    }

    fn conv(
        &mut self,
        name: &str,
        input: &str,
        output: &str,
        channels: usize,
        out: usize,
        k: usize,
    ) -> NodeProto {
        let (w, b) = (format!("{name}.weight"), format!("{name}.bias"));
        let fan_in = channels * k * k;
        self.uniform(&w, &[out, channels, k, k], fan_in);
        self.uniform(&b, &[out], fan_in);
        let k = k as i64;
        node(
            "Conv",
            name,
            &[input, &w, &b],
            &[output],
            vec![ints_attr("kernel_shape", &[k, k])],
        )
    }
}

/// The layers of [`Architecture::MobileTiny`]: convolutions without bias, each followed by
/// BatchNormalization (PyTorch's layout for `Conv2d(bias=False)` + `BatchNorm2d`).
impl Init {
    /// Conv (no bias) + BatchNormalization (+ ReLU6 when `relu6`); returns the output name.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        nodes: &mut Vec<NodeProto>,
        name: &str,
        input: &str,
        channels: usize,
        out: usize,
        k: usize,
        stride: usize,
        pads: [usize; 4],
        depthwise: bool,
        relu6: bool,
    ) -> String {
        let w = format!("{name}.weight");
        let per_group = if depthwise { 1 } else { channels };
        let fan_in = per_group * k * k;
        self.uniform(&w, &[out, per_group, k, k], fan_in);
        let conv_out = format!("{name}_conv");
        let (k, s) = (k as i64, stride as i64);
        let pads: Vec<i64> = pads.iter().map(|&p| p as i64).collect();
        nodes.push(node(
            "Conv",
            name,
            &[input, &w],
            &[&conv_out],
            vec![
                ints_attr("kernel_shape", &[k, k]),
                ints_attr("strides", &[s, s]),
                ints_attr("pads", &pads),
                int_attr("group", if depthwise { channels as i64 } else { 1 }),
            ],
        ));
        let bn = format!("{name}.bn");
        let params: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|p| format!("{bn}.{p}"))
            .collect();
        for (p, value) in params.iter().zip([1.0f32, 0.0, 0.0, 1.0]) {
            self.initializers
                .push(float_tensor(p, &[out], &vec![value; out]));
        }
        let bn_out = format!("{name}_bn");
        nodes.push(node(
            "BatchNormalization",
            &bn,
            &[&conv_out, &params[0], &params[1], &params[2], &params[3]],
            &[&bn_out],
            vec![
                proto::float_attr("epsilon", 1e-5),
                proto::float_attr("momentum", 0.9),
            ],
        ));
        if !relu6 {
            return bn_out;
        }
        let relu_out = format!("{name}_relu6");
        nodes.push(node(
            "Clip",
            &format!("{name}.relu6"),
            &[&bn_out, RELU6_MIN, RELU6_MAX],
            &[&relu_out],
            vec![],
        ));
        relu_out
    }

    /// An inverted residual block: 1×1 expansion, depthwise k×k, 1×1 projection; a residual
    /// Add when the stride is 1 and the channels match.
    #[allow(clippy::too_many_arguments)]
    fn inverted_residual(
        &mut self,
        nodes: &mut Vec<NodeProto>,
        name: &str,
        input: &str,
        channels: usize,
        expanded: usize,
        out: usize,
        k: usize,
        stride: usize,
    ) -> String {
        let h = self.conv_bn(
            nodes,
            &format!("{name}.expand"),
            input,
            channels,
            expanded,
            1,
            1,
            [0; 4],
            false,
            true,
        );
        // Stride 2: TensorFlow's "SAME" padding, which puts the odd pixel at the end.
        let p = k / 2;
        let pads = if stride == 1 {
            [p, p, p, p]
        } else {
            [p - 1, p - 1, p, p]
        };
        let h = self.conv_bn(
            nodes,
            &format!("{name}.depthwise"),
            &h,
            expanded,
            expanded,
            k,
            stride,
            pads,
            true,
            true,
        );
        let h = self.conv_bn(
            nodes,
            &format!("{name}.project"),
            &h,
            expanded,
            out,
            1,
            1,
            [0; 4],
            false,
            false,
        );
        if stride != 1 || channels != out {
            return h;
        }
        let sum = format!("{name}_out");
        nodes.push(node(
            "Add",
            &format!("{name}.residual"),
            &[input, &h],
            &[&sum],
            vec![],
        ));
        sum
    }
}

/// Names of the ReLU6 bounds (Clip's min and max inputs, opset ≥ 11).
const RELU6_MIN: &str = "relu6.min";
const RELU6_MAX: &str = "relu6.max";

fn mobile_tiny(init: &mut Init) -> Vec<NodeProto> {
    init.initializers.push(float_tensor(RELU6_MIN, &[], &[0.0]));
    init.initializers.push(float_tensor(RELU6_MAX, &[], &[6.0]));
    let mut nodes = Vec::new();
    let n = &mut nodes;
    // Stride-2 stem padded at the end only, as EfficientNet-Lite0's: 28×28 → 14×14.
    let h = init.conv_bn(n, "stem", INPUT, 1, 16, 3, 2, [0, 0, 1, 1], false, true);
    let h = init.inverted_residual(n, "block1", &h, 16, 48, 16, 3, 1); // residual
    let h = init.inverted_residual(n, "block2", &h, 16, 48, 24, 3, 2); // 7×7
    let h = init.inverted_residual(n, "block3", &h, 24, 72, 24, 5, 1); // residual
    let h = init.inverted_residual(n, "block4", &h, 24, 72, 40, 3, 1);
    let h = init.conv_bn(n, "head", &h, 40, 128, 1, 1, [0; 4], false, true);
    n.push(node(
        "GlobalAveragePool",
        "pool",
        &[&h],
        &["pooled"],
        vec![],
    ));
    n.push(node(
        "Flatten",
        "flatten",
        &["pooled"],
        &["flat"],
        vec![int_attr("axis", 1)],
    ));
    let fc = init.gemm("fc", "flat", OUTPUT, 128, 10);
    n.push(fc);
    nodes
}

fn max_pool(name: &str, input: &str, output: &str) -> NodeProto {
    node(
        "MaxPool",
        name,
        &[input],
        &[output],
        vec![
            ints_attr("kernel_shape", &[2, 2]),
            ints_attr("strides", &[2, 2]),
        ],
    )
}

/// Builds `architecture` for 28×28 gray images and 10 classes with weights drawn from `seed`.
/// Input `input` `[N,1,28,28]` float (pixel / 255), output `logits` `[N,10]`.
pub fn build(architecture: Architecture, seed: u64) -> ModelProto {
    let mut init = Init {
        rng: StdRng::seed_from_u64(seed),
        initializers: Vec::new(),
    };
    let nodes = match architecture {
        Architecture::Lenet300 => vec![
            node(
                "Flatten",
                "flatten",
                &[INPUT],
                &["flat"],
                vec![int_attr("axis", 1)],
            ),
            init.gemm("fc1", "flat", "fc1_out", 784, 300),
            node("Relu", "relu1", &["fc1_out"], &["relu1_out"], vec![]),
            init.gemm("fc2", "relu1_out", "fc2_out", 300, 100),
            node("Relu", "relu2", &["fc2_out"], &["relu2_out"], vec![]),
            init.gemm("fc3", "relu2_out", OUTPUT, 100, 10),
        ],
        Architecture::Lenet5 => vec![
            init.conv("conv1", INPUT, "conv1_out", 1, 20, 5),
            max_pool("pool1", "conv1_out", "pool1_out"),
            init.conv("conv2", "pool1_out", "conv2_out", 20, 50, 5),
            max_pool("pool2", "conv2_out", "pool2_out"),
            node(
                "Flatten",
                "flatten",
                &["pool2_out"],
                &["flat"],
                vec![int_attr("axis", 1)],
            ),
            init.gemm("fc1", "flat", "fc1_out", 800, 500),
            node("Relu", "relu1", &["fc1_out"], &["relu1_out"], vec![]),
            init.gemm("fc2", "relu1_out", OUTPUT, 500, 10),
        ],
        Architecture::MobileTiny => mobile_tiny(&mut init),
    };
    let name = match architecture {
        Architecture::Lenet300 => "lenet300",
        Architecture::Lenet5 => "lenet5",
        Architecture::MobileTiny => "mobile-tiny",
    };
    proto::model(GraphProto {
        name: name.into(),
        node: nodes,
        initializer: init.initializers,
        input: vec![float_value_info(
            INPUT,
            &[None, Some(1), Some(28), Some(28)],
        )],
        output: vec![float_value_info(OUTPUT, &[None, Some(10)])],
        ..Default::default()
    })
}

/// A graph with one node, for tests and diagnostics: the node's first input is the graph input,
/// `initializers` feed the others; the output shape is left undeclared.
pub fn single_node_model(
    n: NodeProto,
    input_shape: &[usize],
    initializers: Vec<TensorProto>,
) -> ModelProto {
    let shape: Vec<Option<usize>> = input_shape.iter().map(|&d| Some(d)).collect();
    let input = float_value_info(&n.input[0], &shape);
    let mut output = float_value_info(&n.output[0], &[]);
    output.r#type = None;
    proto::model(GraphProto {
        name: format!("single {}", n.op_type),
        input: vec![input],
        output: vec![output],
        node: vec![n],
        initializer: initializers,
        ..Default::default()
    })
}
