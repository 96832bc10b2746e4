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

/// The path an origin server would act on: percent-decoded once (invalid escapes kept),
/// backslashes taken as slashes, then dot segments removed as RFC 3986 §5.2.4 does. The same
/// model as the `/v1` property test in `ccflare_core::request`.
pub fn resolved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            decoded.push((high * 16 + low) as u8);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." if last => output.push(""),
            "." => {}
            ".." => {
                output.pop();
                if last {
                    output.push("");
                }
            }
            other => output.push(other),
        }
    }
    format!("/{}", output.join("/"))
}
