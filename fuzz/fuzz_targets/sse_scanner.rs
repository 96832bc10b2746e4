//! The SSE usage scanner fed any bytes in chunks of any sizes: it never panics, and its summary
//! is the one it gives for the same bytes fed whole. The same bytes also go through the JSON
//! body reader and the pricing of what was read.
//!
//! Input: 4 bytes of chunk sizes (each 1 to 256, cycled), then the stream.

#![no_main]

use ccflare_core::sse::SseScanner;
use ccflare_fuzz::split_params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (sizes, stream) = split_params::<4>(data);
    let mut whole = SseScanner::new();
    whole.feed(stream);
    let whole = whole.into_summary();

    let mut chunked = SseScanner::new();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, after) = rest.split_at((usize::from(*size) + 1).min(rest.len()));
        chunked.feed(chunk);
        rest = after;
    }
    assert_eq!(
        chunked.into_summary(),
        whole,
        "chunking changed the summary"
    );

    let _ = ccflare_core::pricing::cost(whole.model.as_deref(), &whole.usage);
    if let Some((model, usage)) = ccflare_core::usage::from_json_body(stream) {
        let _ = ccflare_core::pricing::cost(model.as_deref(), &usage);
    }
});
