//! What the fuzz targets share: reading a fuzzer's bytes as the inputs a target needs (chunk
//! sizes, a clock, header lines), and the reference path resolution the `/v1` check is held
//! to. Each target in `fuzz_targets/` states the properties it checks; a panic is a finding.

/// Splits `data` into its first `n` bytes (zero-padded) and the rest, so a target can take a
/// few parameters from the front of the input and the text it parses from the rest.
pub fn split_params<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut params = [0u8; N];
    let n = data.len().min(N);
    params[..n].copy_from_slice(&data[..n]);
    (params, &data[n..])
}

/// The reference path resolution the `/v1` check is held to: the same file the property
/// test in `ccflare_core::request` uses.
#[path = "../../crates/ccflare-core/src/request/path_model.rs"]
mod path_model;
pub use path_model::resolved;
