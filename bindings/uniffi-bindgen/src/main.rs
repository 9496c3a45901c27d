//! The bindings' own `uniffi-bindgen`, pinned to the workspace's uniffi: generates Kotlin and Swift
//! from the built library, e.g.
//! `uniffi-bindgen generate --library target/debug/libnnzip.so --language kotlin --out-dir out`
//! (`scripts/bindings.sh` runs it).

fn main() {
    uniffi::uniffi_bindgen_main()
}
