//! ONNX's own backend tests run against the core runtime.
//!
//! ONNX ships its conformance data as folders of `model.onnx` next to `test_data_set_N/`
//! (`input_K.pb`, `output_K.pb`: TensorProto files). For each test: when every operator is one
//! nnzip supports, the model is packed into a `.nnz` in memory, loaded by the core, run on each
//! data set and compared with the expected outputs; otherwise it is unsupported, with the
//! operators it lacks. A model the reader refuses with a reason of its own (an attribute or
//! input nnzip does not take) is unsupported too, with that reason; a load that fails inside
//! tract, a run that fails or a wrong output is a failure.

use crate::model_io::{NamedModel, read_tensor_file};
use anyhow::{Context, Result};
use nnzip_core::Tensor;
use nnzip_core::onnx::proto::ModelProto;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// ONNX's backend runner compares with `numpy.testing.assert_allclose(out, ref, rtol, atol)`
/// (NaN equal to NaN): `|out - ref| <= atol + rtol * |ref|`. Its node and model tests use
/// `rtol = 1e-3`, `atol = 1e-7` unless a test's `data.json` says otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance {
            rtol: 1e-3,
            atol: 1e-7,
        }
    }
}

/// What one test came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every output of every data set within tolerance.
    Pass,
    /// Loaded by nnzip's reader but failed in tract, failed to run, or gave a wrong output.
    Fail(String),
    /// Uses operators (or domains) nnzip does not run.
    Unsupported(Vec<String>),
    /// Every operator is supported, but the reader refuses the model for a stated reason.
    Refused(String),
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// The folder the test is in (`node`, `pytorch-converted`, …).
    pub folder: String,
    /// The test's name (its directory).
    pub name: String,
    /// What it came to.
    pub outcome: Outcome,
}

/// Runs every test under `root/<folder>` for each folder, sorted by name.
pub fn run_folders(root: &Path, folders: &[String]) -> Result<Vec<CaseResult>> {
    let mut results = Vec::new();
    for folder in folders {
        let dir = root.join(folder);
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("model.onnx").is_file())
            .collect();
        cases.sort();
        for case in cases {
            let name = case
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            results.push(CaseResult {
                folder: folder.clone(),
                name,
                outcome: run_case(&case),
            });
        }
    }
    Ok(results)
}

/// Runs one test directory.
pub fn run_case(dir: &Path) -> Outcome {
    let bytes = match std::fs::read(dir.join("model.onnx")) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(format!("cannot read model.onnx: {e}")),
    };
    let proto = match ModelProto::decode(bytes.as_slice()) {
        Ok(p) => p,
        Err(e) => return Outcome::Fail(format!("model.onnx is not ONNX: {e}")),
    };
    let missing = missing_operators(&proto);
    if !missing.is_empty() {
        return Outcome::Unsupported(missing);
    }
    let model = match load(&bytes) {
        Ok(m) => m,
        Err(outcome) => return outcome,
    };
    let tolerance = tolerance(dir);
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    sets.retain(|p| {
        p.is_dir()
            && p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set"))
    });
    sets.sort();
    if sets.is_empty() {
        return Outcome::Fail("no test_data_set_* folder".into());
    }
    for set in &sets {
        if let Err(e) = run_data_set(&model, set, tolerance) {
            let set_name = set.file_name().unwrap_or_default().to_string_lossy();
            return Outcome::Fail(format!("{set_name}: {e:#}"));
        }
    }
    Outcome::Pass
}

/// The default-domain operators of the graph nnzip does not run, and other domains' operators
/// as `domain:Op`, sorted.
pub fn missing_operators(proto: &ModelProto) -> Vec<String> {
    let mut missing = BTreeSet::new();
    for node in proto.graph.iter().flat_map(|g| &g.node) {
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        if !default_domain {
            missing.insert(format!("{}:{}", node.domain, node.op_type));
        } else if !nnzip_core::SUPPORTED_OPERATORS.contains(&node.op_type.as_str()) {
            missing.insert(node.op_type.clone());
        }
    }
    missing.into_iter().collect()
}

/// Packs and loads the model; a refusal with a reason of the reader's own is [`Outcome::Refused`],
/// an error from inside tract (or a panic caught) is a failure.
fn load(onnx: &[u8]) -> std::result::Result<NamedModel, Outcome> {
    NamedModel::from_bytes(onnx).map_err(|e| {
        // The innermost error is the reader's own words; the context around it only says that
        // packing failed.
        let cause = e.root_cause().to_string();
        if cause.contains("tract cannot") || cause.contains("internal panic") {
            Outcome::Fail(format!("load: {e:#}"))
        } else {
            Outcome::Refused(cause)
        }
    })
}

/// The test's tolerance: `data.json`'s `rtol`/`atol` when it has them, else ONNX's defaults.
fn tolerance(dir: &Path) -> Tolerance {
    let mut t = Tolerance::default();
    let Ok(text) = std::fs::read_to_string(dir.join("data.json")) else {
        return t;
    };
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
        if let Some(r) = json.get("rtol").and_then(|v| v.as_f64()) {
            t.rtol = r;
        }
        if let Some(a) = json.get("atol").and_then(|v| v.as_f64()) {
            t.atol = a;
        }
    }
    t
}

/// Reads `input_K.pb` / `output_K.pb` files of a data set, in K order.
fn numbered(set: &Path, prefix: &str) -> Result<Vec<Tensor>> {
    let mut tensors = Vec::new();
    loop {
        let path = set.join(format!("{prefix}_{}.pb", tensors.len()));
        if !path.is_file() {
            return Ok(tensors);
        }
        tensors.push(read_tensor_file(&path)?);
    }
}

fn run_data_set(model: &NamedModel, set: &Path, tolerance: Tolerance) -> Result<()> {
    let inputs = numbered(set, "input")?;
    let expected = numbered(set, "output")?;
    if inputs.len() != model.ports.inputs.len() {
        anyhow::bail!(
            "{} input files for {} graph inputs",
            inputs.len(),
            model.ports.inputs.len()
        );
    }
    let named = model
        .ports
        .inputs
        .iter()
        .map(|p| p.name.clone())
        .zip(inputs)
        .collect();
    let outputs = model.run(named)?;
    if outputs.len() != expected.len() {
        anyhow::bail!("{} outputs, {} expected", outputs.len(), expected.len());
    }
    for (k, ((name, got), want)) in outputs.iter().zip(&expected).enumerate() {
        compare(got, want, tolerance).with_context(|| format!("output {k} ('{name}')"))?;
    }
    Ok(())
}

/// Checks `got` against `want` as ONNX's runner does: same shape, same element type, values
/// within `tolerance` (floats; NaN matches NaN, infinities match exactly) or equal (integers,
/// bools).
pub fn compare(got: &Tensor, want: &Tensor, tolerance: Tolerance) -> Result<()> {
    if got.shape() != want.shape() {
        anyhow::bail!("shape {:?}, expected {:?}", got.shape(), want.shape());
    }
    if got.datum_type() != want.datum_type() {
        anyhow::bail!(
            "element type {:?}, expected {:?}",
            got.datum_type(),
            want.datum_type()
        );
    }
    let as_f64 = |t: &Tensor| -> Result<Vec<f64>> {
        let t = t.cast_to::<f64>()?;
        Ok(t.try_as_plain_ram()?.as_slice::<f64>()?.to_vec())
    };
    let (g, w) = (as_f64(got)?, as_f64(want)?);
    let exact = !want.datum_type().is_float();
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0usize;
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        let ok = if exact {
            a == b
        } else if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= tolerance.atol + tolerance.rtol * b.abs()
        };
        if !ok {
            bad += 1;
            let excess = (a - b).abs();
            if worst.is_none_or(|(_, e)| excess > e || e.is_nan()) {
                worst = Some((i, excess));
            }
        }
    }
    if let Some((i, _)) = worst {
        anyhow::bail!(
            "{bad} of {} values off (rtol {}, atol {}); the worst at flat index {i}: {} vs expected {}",
            w.len(),
            tolerance.rtol,
            tolerance.atol,
            g[i],
            w[i]
        );
    }
    Ok(())
}

/// One line per test: `folder/name: pass`, `fail: why`, `unsupported: Op, Op` or `refused: why`.
pub fn render_each(results: &[CaseResult]) -> String {
    results
        .iter()
        .map(|r| {
            let what = match &r.outcome {
                Outcome::Pass => "pass".to_string(),
                Outcome::Fail(why) => format!("fail: {why}"),
                Outcome::Unsupported(ops) => format!("unsupported: {}", ops.join(", ")),
                Outcome::Refused(why) => format!("refused: {why}"),
            };
            format!("{}/{}: {what}\n", r.folder, r.name)
        })
        .collect()
}

/// Counts of one folder.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Tests passed.
    pub pass: usize,
    /// Tests failed.
    pub fail: usize,
    /// Tests using operators nnzip does not run.
    pub unsupported: usize,
    /// Tests whose operators are supported but whose use of them the reader refuses.
    pub refused: usize,
}

/// Counts per folder, in folder order.
pub fn counts(results: &[CaseResult]) -> BTreeMap<String, Counts> {
    let mut by_folder: BTreeMap<String, Counts> = BTreeMap::new();
    for r in results {
        let c = by_folder.entry(r.folder.clone()).or_default();
        match r.outcome {
            Outcome::Pass => c.pass += 1,
            Outcome::Fail(_) => c.fail += 1,
            Outcome::Unsupported(_) => c.unsupported += 1,
            Outcome::Refused(_) => c.refused += 1,
        }
    }
    by_folder
}

/// The report: counts per folder, every failure with its reason, every refusal with the
/// reader's reason, and the missing operators by the number of tests they would unlock.
pub fn render(results: &[CaseResult], top_missing: usize) -> String {
    let mut out = String::new();
    let mut table = crate::table::Table::new(&["folder", "pass", "fail", "unsupported", "refused"]);
    let mut total = Counts::default();
    for (folder, c) in counts(results) {
        table.row(vec![
            folder,
            c.pass.to_string(),
            c.fail.to_string(),
            c.unsupported.to_string(),
            c.refused.to_string(),
        ]);
        total.pass += c.pass;
        total.fail += c.fail;
        total.unsupported += c.unsupported;
        total.refused += c.refused;
    }
    table.row(vec![
        "total".into(),
        total.pass.to_string(),
        total.fail.to_string(),
        total.unsupported.to_string(),
        total.refused.to_string(),
    ]);
    out.push_str(&table.render());
    let section = |out: &mut String, title: &str, pick: &dyn Fn(&Outcome) -> Option<String>| {
        let lines: Vec<String> = results
            .iter()
            .filter_map(|r| {
                pick(&r.outcome).map(|why| format!("  {}/{}: {why}\n", r.folder, r.name))
            })
            .collect();
        if !lines.is_empty() {
            out.push_str(&format!("\n{title} ({}):\n", lines.len()));
            lines.iter().for_each(|l| out.push_str(l));
        }
    };
    section(&mut out, "failures", &|o| match o {
        Outcome::Fail(why) => Some(why.clone()),
        _ => None,
    });
    section(&mut out, "refused by the reader", &|o| match o {
        Outcome::Refused(why) => Some(why.clone()),
        _ => None,
    });
    let mut missing: BTreeMap<&str, usize> = BTreeMap::new();
    for r in results {
        if let Outcome::Unsupported(ops) = &r.outcome {
            for op in ops {
                *missing.entry(op.as_str()).or_default() += 1;
            }
        }
    }
    let mut missing: Vec<(&str, usize)> = missing.into_iter().collect();
    missing.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if !missing.is_empty() {
        out.push_str(&format!(
            "\nmissing operators, by the number of tests that use them ({} operators, the first {}):\n",
            missing.len(),
            top_missing.min(missing.len())
        ));
        for (op, n) in missing.iter().take(top_missing) {
            out.push_str(&format!("  {op:<28} {n}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::float_value_info;
    use nnzip_core::onnx::proto::{GraphProto, NodeProto, OperatorSetIdProto};

    /// A test folder as ONNX lays them out: a one-node `op` graph from `x` [3] to `y` [3], one
    /// data set with `input` and `expected`.
    fn case(name: &str, op: &str, input: &[f32], expected: &[f32]) -> PathBuf {
        let dir = std::env::temp_dir()
            .join(format!("nnzip-conformance-{}", std::process::id()))
            .join(name);
        let set = dir.join("test_data_set_0");
        std::fs::create_dir_all(&set).unwrap();
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    op_type: op.into(),
                    ..Default::default()
                }],
                input: vec![float_value_info("x", &[Some(3)])],
                output: vec![float_value_info("y", &[Some(3)])],
                ..Default::default()
            }),
            ..Default::default()
        };
        std::fs::write(dir.join("model.onnx"), model.encode_to_vec()).unwrap();
        let write = |file: &str, values: &[f32]| {
            let t = Tensor::from_shape(&[values.len()], values).unwrap();
            crate::model_io::write_tensor_file(&set.join(file), "t", &t).unwrap();
        };
        write("input_0.pb", input);
        write("output_0.pb", expected);
        dir
    }

    #[test]
    fn a_right_output_passes_and_a_wrong_one_fails() {
        let right = case("relu_right", "Relu", &[-1.0, 0.5, 2.0], &[0.0, 0.5, 2.0]);
        assert_eq!(run_case(&right), Outcome::Pass);
        let wrong = case("relu_wrong", "Relu", &[-1.0, 0.5, 2.0], &[0.0, 0.5, 2.1]);
        match run_case(&wrong) {
            Outcome::Fail(why) => assert!(why.contains("1 of 3 values off"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_operator_is_unsupported_by_name() {
        let dir = case("erf", "Erf", &[0.0; 3], &[0.0; 3]);
        assert_eq!(run_case(&dir), Outcome::Unsupported(vec!["Erf".into()]));
    }

    #[test]
    fn comparison_follows_numpy_allclose() {
        let t = |v: &[f32]| Tensor::from_shape(&[v.len()], v).unwrap();
        let tol = Tolerance::default();
        // Within atol + rtol·|expected|, NaN against NaN, equal infinities.
        compare(
            &t(&[1.0005, f32::NAN, f32::INFINITY]),
            &t(&[1.0, f32::NAN, f32::INFINITY]),
            tol,
        )
        .unwrap();
        assert!(compare(&t(&[1.002]), &t(&[1.0]), tol).is_err());
        assert!(compare(&t(&[0.0]), &t(&[f32::NAN]), tol).is_err());
        assert!(compare(&t(&[1.0, 2.0]), &t(&[1.0]), tol).is_err(), "shape");
        let ints = Tensor::from_shape(&[1], &[1i64]).unwrap();
        let err = compare(&t(&[1.0]), &ints, tol).unwrap_err().to_string();
        assert!(err.contains("element type"), "{err}");
    }

    #[test]
    fn counts_are_per_folder() {
        let result = |folder: &str, outcome| CaseResult {
            folder: folder.into(),
            name: "t".into(),
            outcome,
        };
        let results = vec![
            result("node", Outcome::Pass),
            result("node", Outcome::Unsupported(vec!["Erf".into()])),
            result("simple", Outcome::Refused("why".into())),
            result("simple", Outcome::Fail("off".into())),
        ];
        let c = counts(&results);
        assert_eq!((c["node"].pass, c["node"].unsupported), (1, 1));
        assert_eq!((c["simple"].refused, c["simple"].fail), (1, 1));
        let each = render_each(&results);
        assert_eq!(each.lines().count(), 4);
        assert!(each.contains("node/t: unsupported: Erf\n"), "{each}");
        let text = render(&results, 5);
        assert!(
            text.contains("failures (1)") && text.contains("simple/t: off"),
            "{text}"
        );
        assert!(text.contains("Erf"), "{text}");
    }
}
