//! `nnzip`: compress neural networks for phones.

fn main() {
    println!("nnzip {}", env!("CARGO_PKG_VERSION"));
}
