//! Builds the classic Deep Compression networks as ONNX models, randomly initialised.

use super::proto::{self, float_tensor, float_value_info, int_attr, ints_attr, node};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto};

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
    };
    let name = match architecture {
        Architecture::Lenet300 => "lenet300",
        Architecture::Lenet5 => "lenet5",
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
