//! The reference the `/v1` escape check is held to, by its property test here and by the
//! `v1_path` fuzz target (`fuzz/src/lib.rs` includes this file): where an origin server would
//! take a path. Test code only; never compiled into ccflare.

/// The path an origin server would act on: percent-decoded once (invalid escapes kept),
/// backslashes taken as slashes, then dot segments removed as RFC 3986 §5.2.4 does.
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
