//! Shared by the tests that run the `nnzip` binary.
// Each test crate uses only some of these.
#![allow(dead_code)]

use std::process::Command;

/// Runs `nnzip` with these arguments: whether it succeeded, its stdout and its stderr.
pub fn nnzip(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nnzip"))
        .args(args)
        .output()
        .expect("run nnzip");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `nnzip`, which must succeed, and returns its stdout.
pub fn nnzip_ok(args: &[&str]) -> String {
    let (ok, stdout, stderr) = nnzip(args);
    assert!(ok, "nnzip {args:?} failed:\n{stderr}");
    stdout
}
