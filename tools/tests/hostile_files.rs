//! The hostile files of issue 21, crafted here for two uses: the tests below hold the CLI to
//! them (graphs tract would panic on are refused by `pack`, one-shot `compress` and `classify`,
//! naming the node), and `scripts/hostile-table.sh` writes them with the ignored test
//! `write_the_case_files` (`NNZIP_HOSTILE_DIR=dir`) to measure the release CLI on each
//! (docs/HOSTILE.md).

mod common;

use common::nnzip;
use nnzip_core::format::{MAGIC, NnzWriter, TensorData, TensorRecord};
use nnzip_core::metadata::{
    ColorOrder, InputSpec, Interpolation, Layout, Metadata, Preprocessing, Resize,
};
use nnzip_core::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, attribute_proto::AttributeType, tensor_proto::DataType,
};
use prost::Message;
use std::path::{Path, PathBuf};

/// The input of the crafted graphs: one 8×8 gray image.
const INPUT: [i64; 4] = [1, 1, 8, 8];

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

/// A valid small classifier: `Relu(Flatten(MaxPool(Conv(x, w))))`, `w` [16, 1, 4, 4] held as an
/// initializer: 256 weights, so that one-shot `compress` has a tensor to share.
fn valid_graph() -> GraphProto {
    let mut conv = node("Conv", "conv", &["x", "w"], "c");
    conv.attribute = vec![ints("kernel_shape", &[4, 4]), ints("strides", &[1, 1])];
    let mut pool = node("MaxPool", "pool", &["c"], "p");
    pool.attribute = vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])];
    let mut flatten = node("Flatten", "flatten", &["p"], "f");
    flatten.attribute = vec![AttributeProto {
        name: "axis".into(),
        r#type: AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    }];
    let w = TensorProto {
        name: "w".into(),
        dims: vec![16, 1, 4, 4],
        data_type: DataType::Float as i32,
        float_data: (0..256).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect(),
        ..Default::default()
    };
    GraphProto {
        name: "hostile".into(),
        node: vec![conv, pool, flatten, node("Relu", "relu", &["f"], "y")],
        initializer: vec![w],
        input: vec![ValueInfoProto::float("x", &INPUT)],
        output: vec![ValueInfoProto::float("y", &[1, 64])],
        ..Default::default()
    }
}

/// An edit of the valid graph that makes it hostile.
type GraphEdit = fn(&mut GraphProto);

/// The graph cases of issue 21: name, and the edit that makes tract panic (or run a foreign
/// operator as the standard one) if nothing checked the graph first.
fn graph_cases() -> Vec<(&'static str, GraphEdit)> {
    vec![
        ("output-no-node-produces", |g| {
            g.output[0].name = "nowhere".into()
        }),
        ("conv-strides-0", |g| {
            g.node[0].attribute[1] = ints("strides", &[0, 1])
        }),
        ("maxpool-strides-0", |g| {
            g.node[1].attribute[1] = ints("strides", &[0, 0])
        }),
        ("flatten-axis-100", |g| g.node[2].attribute[0].i = 100),
        ("empty-graph", |g| {
            g.node.clear();
            g.initializer.clear();
        }),
        ("com-evil-relu", |g| g.node[3].domain = "com.evil".into()),
    ]
}

/// What the error of each graph case must say.
fn expected_error(case: &str) -> &'static str {
    match case {
        "output-no-node-produces" => "graph output 'nowhere' is produced by no node",
        "conv-strides-0" => "node 'conv' (Conv)",
        "maxpool-strides-0" => "node 'pool' (MaxPool)",
        "flatten-axis-100" => "axis 100 is out of range",
        "empty-graph" => "the ONNX graph has no nodes",
        "com-evil-relu" => "domain 'com.evil'",
        other => panic!("no such case {other}"),
    }
}

fn model_bytes(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A gray 8×8 recipe, or a hostile one when `side` is not 8.
fn recipe(side: u32) -> Preprocessing {
    Preprocessing {
        resize: Resize::Exact {
            width: side,
            height: side,
        },
        crop: None,
        interpolation: Interpolation::Bilinear,
        color: ColorOrder::Gray,
        layout: Layout::Nchw,
        pixel_scale: 1.0 / 255.0,
        mean: vec![0.0],
        std: vec![1.0],
        invert: false,
    }
}

/// `graph` as a `.nnz` file written by the core's encoder directly (which, unlike `pack`, does
/// not check the graph: a hostile file need not come from our tools), its initializers moved to
/// the file's tensors, `drop` of them left out.
fn nnz_bytes(mut graph: GraphProto, side: u32, drop: Option<&str>) -> Vec<u8> {
    let tensors = std::mem::take(&mut graph.initializer);
    let metadata = Metadata {
        model_name: "hostile".into(),
        input: InputSpec {
            name: "x".into(),
            shape: INPUT.to_vec(),
        },
        preprocessing: Some(recipe(side)),
        ..Default::default()
    };
    let mut w = NnzWriter::new(metadata, model_bytes(graph));
    for t in tensors
        .into_iter()
        .filter(|t| Some(t.name.as_str()) != drop)
    {
        w.push(TensorRecord {
            row_scales: None,
            name: t.name,
            shape: t.dims.iter().map(|&d| d as u64).collect(),
            data: TensorData::RawF32(t.float_data),
        })
        .unwrap();
    }
    w.to_bytes().unwrap()
}

/// The shared-sparse bomb of issue 21: `fillers` entries of 16-bit gaps (each skipping 65,535
/// zeros) declare `elements` zeros in a few tens of KB, as a version-1 file assembled byte by
/// byte (the encoder refuses to write a file over its load budget).
fn sparse_bomb(elements: u64, fillers: u64) -> Vec<u8> {
    const GAP_BITS: u8 = 16;
    let mut payload = vec![1u8, GAP_BITS];
    payload.extend(1u32.to_le_bytes()); // one centroid, 0.0
    payload.extend(0f32.to_le_bytes());
    payload.extend(fillers.to_le_bytes());
    payload.extend(1u32.to_le_bytes()); // index code: one symbol of 1 bit
    payload.push(1);
    let gaps = 1usize << GAP_BITS; // gap code: only the largest gap, 1 bit
    payload.extend((gaps as u32).to_le_bytes());
    payload.extend(std::iter::repeat_n(0u8, gaps - 1));
    payload.push(1);
    for _ in 0..2 {
        payload.extend(fillers.div_ceil(8).to_le_bytes());
        payload.extend(std::iter::repeat_n(0u8, fillers.div_ceil(8) as usize));
    }
    let json = serde_json::to_vec(&Metadata::default()).unwrap();
    let mut body = (json.len() as u32).to_le_bytes().to_vec();
    body.extend(json);
    body.push(0); // graph stored, empty
    body.extend(0u64.to_le_bytes());
    body.extend(0u64.to_le_bytes());
    body.extend(1u32.to_le_bytes()); // one tensor, named "w"
    body.extend(1u16.to_le_bytes());
    body.push(b'w');
    body.push(3); // shared-sparse
    body.push(1); // rank 1
    body.extend(elements.to_le_bytes());
    body.extend((payload.len() as u64).to_le_bytes());
    body.extend(payload);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    let mut file = MAGIC.to_vec();
    file.extend(1u16.to_le_bytes()); // version 1, no flags
    file.extend(0u16.to_le_bytes());
    file.extend(crc.sum().to_le_bytes());
    file.extend((body.len() as u64).to_le_bytes());
    file.extend(body);
    file
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    c.extend(crc.sum().to_be_bytes());
    c
}

/// A 1-bit gray PNG declaring `side × side` pixels, its rows deflated (all zero): about 33 KB
/// for 16384².
fn one_bit_png(side: u32) -> Vec<u8> {
    use std::io::Write;
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([1, 0, 0, 0, 0]); // 1 bit, gray, deflate, no filter, no interlace
    let row = 1 + (side as usize).div_ceil(8); // filter byte + packed pixels
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; row];
    for _ in 0..side {
        z.write_all(&zeros).unwrap();
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(png_chunk(b"IHDR", &ihdr));
    png.extend(png_chunk(b"IDAT", &z.finish().unwrap()));
    png.extend(png_chunk(b"IEND", &[]));
    png
}

fn encoded(img: image::GrayImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A small valid JPEG whose frame header is patched to declare `width × height`.
fn jpeg_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut jpeg = encoded(
        image::GrayImage::from_pixel(8, 8, image::Luma([128])),
        image::ImageFormat::Jpeg,
    );
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    // Marker (2), length (2), precision (1), then height and width.
    jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    jpeg
}

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared")
        .join(rel)
}

/// Writes every case file into `dir`; returns their names.
fn write_case_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (case, edit) in graph_cases() {
        let mut g = valid_graph();
        edit(&mut g);
        files.push((format!("graph-{case}.onnx"), model_bytes(g.clone())));
        files.push((format!("graph-{case}.nnz"), nnz_bytes(g, 8, None)));
    }
    files.push(("valid.onnx".into(), model_bytes(valid_graph())));
    files.push(("valid.nnz".into(), nnz_bytes(valid_graph(), 8, None)));
    files.push((
        "recipe-16384.nnz".into(),
        nnz_bytes(valid_graph(), 16384, None),
    ));
    files.push((
        "missing-tensor.nnz".into(),
        nnz_bytes(valid_graph(), 8, Some("w")),
    ));
    // 4,096 fillers of 65,536 positions: 2^28 elements (1 GiB of f32) declared.
    files.push(("sparse-bomb.nnz".into(), sparse_bomb(1 << 28, 1 << 12)));
    files.push(("png-16384-1bit.png".into(), one_bit_png(16384)));
    files.push(("jpeg-16384x10000.jpg".into(), jpeg_declaring(16384, 10000)));
    files.push((
        "one-pixel.png".into(),
        encoded(
            image::GrayImage::from_pixel(1, 1, image::Luma([9])),
            image::ImageFormat::Png,
        ),
    ));
    let photo = std::fs::read(shared("images/chelsea.jpg")).unwrap();
    files.push((
        "truncated-half.jpg".into(),
        photo[..photo.len() / 2].to_vec(),
    ));
    std::fs::create_dir_all(dir).unwrap();
    files
        .into_iter()
        .map(|(name, bytes)| {
            std::fs::write(dir.join(&name), bytes).unwrap();
            name
        })
        .collect()
}

fn folder(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnzip-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// For `scripts/hostile-table.sh`: `NNZIP_HOSTILE_DIR=dir cargo test -p nnzip-tools --test
/// hostile_files -- --ignored`.
#[test]
#[ignore = "writes the case files for scripts/hostile-table.sh"]
fn write_the_case_files() {
    let dir = std::env::var("NNZIP_HOSTILE_DIR").expect("NNZIP_HOSTILE_DIR names the folder");
    for name in write_case_files(Path::new(&dir)) {
        println!("{dir}/{name}");
    }
}

/// Each graph that made tract panic at load is refused, exit 1 and the problem named, by every
/// command that reads it: `pack` and one-shot `compress` before writing anything, `classify`
/// from a file our tools would not have written; the valid graph passes all three.
#[test]
fn graphs_tract_would_panic_on_are_refused_by_pack_compress_and_classify() {
    let dir = folder("graphs");
    write_case_files(&dir);
    let at = |name: &str| dir.join(name).display().to_string();
    let photo = at("one-pixel.png");
    for (case, _) in graph_cases() {
        let onnx = at(&format!("graph-{case}.onnx"));
        let out = at(&format!("{case}-out.nnz"));
        let nnz = at(&format!("graph-{case}.nnz"));
        let runs = [
            vec!["pack", &onnx, "-o", &out],
            vec!["compress", &onnx, "-o", &out],
            vec!["classify", &nnz, &photo],
        ];
        for args in runs {
            let (ok, _, err) = nnzip(&args);
            assert!(!ok, "{case}: {args:?} succeeded");
            assert!(!err.contains("panicked"), "{case}: {args:?}: {err}");
            assert!(
                err.contains(expected_error(case)),
                "{case}: {args:?}: {err}"
            );
            assert!(!Path::new(&out).exists(), "{case}: {args:?} wrote a file");
        }
    }
    let out = at("valid-out.nnz");
    for args in [
        vec!["pack", &at("valid.onnx"), "-o", &out, "--force"],
        vec!["compress", &at("valid.onnx"), "-o", &out, "--force"],
        vec!["classify", &at("valid.nnz"), &photo],
    ] {
        let (ok, _, err) = nnzip(&args);
        assert!(ok, "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The crafted files are what the table says they are: a bomb of tens of KB, a PNG of about
/// 33 KB and a JPEG under a KB, each refused by `classify` with the reason.
#[test]
fn the_crafted_files_are_small_and_refused() {
    let dir = folder("sizes");
    write_case_files(&dir);
    let at = |name: &str| dir.join(name).display().to_string();
    let size = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    assert!(size("sparse-bomb.nnz") < 80_000);
    assert!(size("png-16384-1bit.png") < 40_000);
    assert!(size("jpeg-16384x10000.jpg") < 1_000);
    let cases = [
        ("sparse-bomb.nnz", "one-pixel.png", "more than a"),
        ("recipe-16384.nnz", "one-pixel.png", "16384×16384"),
        ("valid.nnz", "png-16384-1bit.png", "16384×16384"),
        ("valid.nnz", "jpeg-16384x10000.jpg", "16384×10000"),
        ("valid.nnz", "truncated-half.jpg", "truncated"),
        ("missing-tensor.nnz", "one-pixel.png", "'w'"),
    ];
    for (model, photo, says) in cases {
        let (ok, _, err) = nnzip(&["classify", &at(model), &at(photo)]);
        assert!(!ok, "{model} {photo} classified");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{model} {photo}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
