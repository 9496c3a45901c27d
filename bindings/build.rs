//! Linker settings for the shared library (`libnnzip.so`) only: `cargo:rustc-cdylib-link-arg`
//! reaches the cdylib's link and nothing else (no other crate is rebuilt, tests are unaffected),
//! and it is the same in `scripts/lib-size.sh`, `scripts/bindings.sh` and the Android build
//! (cargo-ndk), so no flag lives in a place that one of them would miss.
//!
//! Both settings need LLD: the NDK's clang links with it, and so does Rust on
//! x86_64-unknown-linux-gnu (rust-lld is the default linker there since Rust 1.90; the workspace
//! needs 1.91). Other targets (macOS/iOS, other Linux hosts, whose default may be GNU ld) get
//! nothing. `NNZIP_PLAIN_LINK=1` turns both off (e.g. when linking with GNU ld on purpose).
//!
//! - `--icf=all`: identical code folding, one copy of functions whose machine code is the same
//!   (tract's per-type monomorphisations often are). Measured, stripped x86_64 `mobile` build:
//!   6 595 520 -> 6 525 296 bytes.
//! - Packed relative relocations. A shared library carries one relocation per pointer in its
//!   vtables and constant tables (tract: many `dyn` ops), 24 bytes each in plain ELF (0.39 MB
//!   here). Packed, they are a few kilobytes: 6 525 296 -> 6 137 688 bytes on the host.
//!   - Android: `--pack-dyn-relocs=android` (loaded by Android 6.0 / API 23 and later; the app's
//!     minSdk is 26). Not RELR: Android reads RELR only from API 28 (API 30 for the standard tags).
//!   - Linux host: `-z pack-relative-relocs` (RELR), read by glibc 2.36 or later; the library
//!     then requires the `GLIBC_ABI_DT_RELR` version, so an older glibc refuses to load it with a
//!     clear error instead of misbehaving.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NNZIP_PLAIN_LINK");
    if env::var_os("NNZIP_PLAIN_LINK").is_some_and(|v| !v.is_empty() && v != "0") {
        return;
    }
    let var = |name: &str| env::var(name).unwrap_or_default();
    let (os, target_env, arch) = (
        var("CARGO_CFG_TARGET_OS"),
        var("CARGO_CFG_TARGET_ENV"),
        var("CARGO_CFG_TARGET_ARCH"),
    );
    let pack = match (os.as_str(), target_env.as_str(), arch.as_str()) {
        ("android", _, _) => "-Wl,--pack-dyn-relocs=android",
        ("linux", "gnu", "x86_64") => "-Wl,-z,pack-relative-relocs",
        _ => return,
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,--icf=all");
    println!("cargo:rustc-cdylib-link-arg={pack}");
}
