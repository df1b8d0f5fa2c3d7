//! Which kernel computes the forward partial sums on the CPU: chosen at run time (the fastest
//! this CPU runs), forced for a process by [`PSUM_PATH_ENV`] or for a thread by
//! [`with_psum_path`] (tests and benches run every path in one process). Every path gives the
//! same bits.

use std::cell::Cell;

/// Which kernel computes the forward partial sums on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsumPath {
    /// Integers, 64 byte products per instruction (`vpdpbusd` on zmm): AVX-512 F, BW and VNNI.
    Vnni512,
    /// Integers, 32 byte products per instruction pair (`vpmaddubsw` + `vpmaddwd` on ymm): AVX2.
    Avx2,
    /// im2col and one f32 matrix product per row tile: every CPU, every backend.
    Generic,
}

/// The environment variable that forces a path: `vnni512`, `avx2` or `generic`.
pub const PSUM_PATH_ENV: &str = "CIM_PSUM_PATH";

impl PsumPath {
    /// Every path, fastest first.
    pub const ALL: [PsumPath; 3] = [PsumPath::Vnni512, PsumPath::Avx2, PsumPath::Generic];

    /// The path's name, as [`PSUM_PATH_ENV`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            PsumPath::Vnni512 => "vnni512",
            PsumPath::Avx2 => "avx2",
            PsumPath::Generic => "generic",
        }
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return match self {
            PsumPath::Vnni512 => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            PsumPath::Avx2 => is_x86_feature_detected!("avx2"),
            PsumPath::Generic => true,
        };
        #[cfg(not(target_arch = "x86_64"))]
        return self == PsumPath::Generic;
    }

    /// The fastest path this CPU runs.
    pub fn detect() -> Self {
        *Self::ALL.iter().find(|p| p.supported()).expect("the generic path runs everywhere")
    }

    /// A path by name, refused (naming the valid names, or the CPU features found) when unknown
    /// or when this CPU cannot run it.
    pub fn parse_supported(name: &str) -> Result<Self, String> {
        let path = Self::ALL.iter().copied().find(|p| p.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
            format!("{PSUM_PATH_ENV}={name}: unknown partial-sum path; expected one of {}", names.join(", "))
        })?;
        if !path.supported() {
            return Err(format!(
                "{PSUM_PATH_ENV}={name}: this CPU cannot run the {name} path (it has: {}); use one of {}",
                cpu_features(),
                Self::ALL.iter().filter(|p| p.supported()).map(|p| p.name()).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(path)
    }

    /// The path [`PSUM_PATH_ENV`] forces, if set (and valid for this CPU).
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(PSUM_PATH_ENV) {
            Ok(name) => Self::parse_supported(name.trim()).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{PSUM_PATH_ENV}: {e}")),
        }
    }

    /// The path the partial sums take on this thread now: the one [`with_psum_path`] set, else
    /// the one [`PSUM_PATH_ENV`] forces, else the fastest this CPU runs. (A forced path this CPU
    /// cannot run is refused by [`PsumPath::from_env`] when a program starts; here it falls back
    /// to the fastest path rather than fault.)
    pub fn current() -> Self {
        if let Some(p) = SCOPED.with(Cell::get) {
            return p;
        }
        static CHOSEN: std::sync::OnceLock<PsumPath> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| Self::from_env().ok().flatten().unwrap_or_else(Self::detect))
    }
}

thread_local! {
    static SCOPED: Cell<Option<PsumPath>> = const { Cell::new(None) };
}

/// Runs `f` with the partial sums of this thread on `path` (tests and benches run every path in
/// one process). Refused when this CPU cannot run it.
pub fn with_psum_path<T>(path: PsumPath, f: impl FnOnce() -> T) -> Result<T, String> {
    if !path.supported() {
        return Err(format!("the {} path needs CPU features this CPU lacks (it has: {})", path.name(), cpu_features()));
    }
    let before = SCOPED.with(|s| s.replace(Some(path)));
    let out = f();
    SCOPED.with(|s| s.set(before));
    Ok(out)
}

/// The SIMD features of this CPU that the paths use, as a list for messages.
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    return {
        let found: Vec<&str> = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512bw", is_x86_feature_detected!("avx512bw")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ]
        .into_iter()
        .filter_map(|(name, has)| has.then_some(name))
        .collect();
        if found.is_empty() { "none of avx2, avx512f, avx512bw, avx512vnni".into() } else { found.join(", ") }
    };
    #[cfg(not(target_arch = "x86_64"))]
    return "none (not an x86-64 CPU)".into();
}
