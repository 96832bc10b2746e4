//! Any path under `/v1/`: the escape check never panics, and no path it accepts resolves
//! outside `/v1/` once percent-decoded and rid of dot segments.
//!
//! Input: the path after `/v1/`.

#![no_main]

use ccflare_core::request::escapes_v1;
use ccflare_fuzz::resolved;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(rest) = std::str::from_utf8(data) else {
        return;
    };
    let path = format!("/v1/{rest}");
    if !escapes_v1(&path) {
        let target = resolved(&path);
        assert!(
            target.starts_with("/v1/"),
            "{path:?} resolves to {target:?}"
        );
    }
});
