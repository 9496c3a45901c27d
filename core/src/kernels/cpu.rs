//! Which vector instruction sets this CPU runs, for every kernel to pick its implementation
//! from one place.
//!
//! Each kernel keeps its implementations per instruction set; what it asks here is which of
//! them it may call. The answer is read from the CPU at run time on x86_64 (a build for any
//! x86_64 runs on a machine with or without AVX2 or AVX-512); NEON is part of every aarch64.

/// A set of instructions the kernels have implementations for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Plain Rust, runs anywhere.
    Portable,
    /// x86_64 AVX2 with FMA: eight f32 lanes.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    /// x86_64 AVX-512F (with AVX2 and FMA): sixteen f32 lanes and masked loads and stores.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64 NEON: four f32 lanes.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// The name a kernel's `info` shows, so that a run on a phone or under qemu tells which
    /// implementation its plan holds.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => "AVX2+FMA",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "AVX-512",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "NEON",
        }
    }
}

/// Every instruction set this CPU runs, the plain-Rust one first and the widest last.
pub(crate) fn available() -> Vec<Isa> {
    #[allow(unused_mut)]
    let mut sets = vec![Isa::Portable];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        sets.push(Isa::Avx2Fma);
        if std::is_x86_feature_detected!("avx512f") {
            sets.push(Isa::Avx512);
        }
    }
    #[cfg(target_arch = "aarch64")]
    sets.push(Isa::Neon);
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_first_each_set_once_avx512_after_avx2() {
        let sets = available();
        assert_eq!(sets[0], Isa::Portable);
        for (i, set) in sets.iter().enumerate() {
            assert!(!sets[i + 1..].contains(set), "{sets:?}");
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(wide) = sets.iter().position(|&s| s == Isa::Avx512) {
            assert!(sets[..wide].contains(&Isa::Avx2Fma), "{sets:?}");
        }
        #[cfg(target_arch = "aarch64")]
        assert!(sets.contains(&Isa::Neon));
    }
}
