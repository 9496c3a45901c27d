//! Bad data gets an error that names the file and the fix.

use nnzip_tools::data::{self, ImageTransform, Split};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nnzip-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn idx(dims: &[u32], data_len: usize) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(std::iter::repeat_n(1u8, data_len));
    b
}

fn err(spec: &Path) -> String {
    format!(
        "{:#}",
        data::load(
            spec.to_str().unwrap(),
            Split::Train,
            &ImageTransform::default()
        )
        .unwrap_err()
    )
}

#[test]
fn a_missing_data_path_says_what_to_pass() {
    let e = err(Path::new("/nonexistent/data"));
    assert!(
        e.contains("/nonexistent/data") && e.contains("fashion-mnist"),
        "{e}"
    );
}

#[test]
fn a_missing_fashion_mnist_says_how_to_install_it() {
    let e = format!(
        "{:#}",
        data::load_fashion_mnist(Path::new("/nonexistent"), Split::Test).unwrap_err()
    );
    assert!(
        e.contains("apt-get install -y dataset-fashion-mnist"),
        "{e}"
    );
}

#[test]
fn idx_with_a_bad_magic_or_mismatched_counts_is_refused() {
    let dir = scratch("idx");
    let mut bad = idx(&[2, 3, 3], 18);
    bad[2] = 0x42;
    std::fs::write(dir.join("train-images-idx3-ubyte"), &bad).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[2], 2)).unwrap();
    let e = err(&dir);
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("0x42"),
        "{e}"
    );

    std::fs::write(dir.join("train-images-idx3-ubyte"), b"GIF89a not idx").unwrap();
    let e = err(&dir);
    assert!(
        e.contains("bad IDX magic") && e.contains("not an IDX file"),
        "{e}"
    );

    std::fs::write(dir.join("train-images-idx3-ubyte"), idx(&[2, 3, 3], 18)).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx(&[3], 3)).unwrap();
    let e = err(&dir);
    assert!(e.contains("2 images") && e.contains("3 labels"), "{e}");

    std::fs::write(dir.join("train-images-idx3-ubyte"), idx(&[2, 3, 3], 17)).unwrap();
    let e = err(&dir);
    assert!(e.contains("truncated or corrupt"), "{e}");

    std::fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx(&[u32::MAX, u32::MAX, u32::MAX], 0),
    )
    .unwrap();
    let e = err(&dir);
    assert!(e.contains("corrupt"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn image_folders_with_mixed_sizes_or_bad_images_name_the_file() {
    let dir = scratch("folder");
    for (class, name, w, h) in [("cat", "a.png", 8, 8), ("dog", "b.png", 9, 8)] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        image::RgbImage::new(w, h)
            .save(dir.join(class).join(name))
            .unwrap();
    }
    let e = err(&dir);
    assert!(
        e.contains("b.png") && e.contains("mixed sizes") && e.contains("--resize"),
        "{e}"
    );

    std::fs::write(dir.join("dog").join("b.png"), b"not a png").unwrap();
    let e = err(&dir);
    assert!(e.contains("b.png"), "{e}");

    // With one size everywhere the folder loads, classes in sorted order.
    image::RgbImage::new(8, 8)
        .save(dir.join("dog").join("b.png"))
        .unwrap();
    let set = data::load(
        dir.to_str().unwrap(),
        Split::Train,
        &ImageTransform::default(),
    )
    .unwrap();
    assert_eq!(set.class_names, ["cat", "dog"]);
    assert_eq!(set.labels, [0, 1]);
    assert_eq!(set.sample_shape, [3, 8, 8]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_whose_output_is_not_a_class_vector_is_refused() {
    use nnzip_tools::onnx::GraphExecutor;
    use nnzip_tools::onnx::build::single_node_model;
    use nnzip_tools::onnx::proto::node;
    // Identity on an image: output [N, 1, 28, 28], not [N, classes].
    let m = single_node_model(
        node("Identity", "id", &["x"], &["y"], vec![]),
        &[1, 1, 28, 28],
        vec![],
    );
    let exec = GraphExecutor::new(m, "identity.onnx").unwrap();
    let set = data::load_fashion_mnist(&data::fashion_mnist_dir(), Split::Test)
        .expect("Fashion-MNIST: scripts/test.sh installs dataset-fashion-mnist")
        .truncate(10);
    let e = format!(
        "{:#}",
        nnzip_tools::train::evaluate(&exec, &set, 10, false).unwrap_err()
    );
    assert!(e.contains("class vector"), "{e}");
}
