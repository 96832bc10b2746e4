//! Criterion benchmark of the SSE usage scanner: bytes per second through `SseScanner::feed`
//! over a realistic stream — the event mix of protocol doc §4.1 (a `message_start`, a text
//! block, pings, the final `message_delta` and `message_stop`) with its text deltas repeated to
//! about 4 MB — fed in the chunk sizes a proxy sees: one event per chunk (the API's own
//! writes), 1 KiB and 16 KiB reads. Run with `cargo bench -p ccflare-core --bench sse_scanner`.

use ccflare_core::sse::SseScanner;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const HEAD: &str = concat!(
    "event: message_start\n",
    "data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-haiku-4-5-20251001\",\"id\":\"msg_01BiHaB6TfwQ4SrYoHQQBE7h\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"stop_details\":null,\"usage\":{\"input_tokens\":27,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1,\"service_tier\":\"standard\",\"inference_geo\":\"not_available\"}}}\n\n",
    "event: content_block_start\n",
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: ping\n",
    "data: {\"type\": \"ping\"}\n\n",
);

const TAIL: &str = concat!(
    "event: content_block_stop\n",
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: message_delta\n",
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"stop_details\":null},\"usage\":{\"input_tokens\":27,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":9}}\n\n",
    "event: message_stop\n",
    "data: {\"type\":\"message_stop\"}\n\n",
);

/// Text deltas of the lengths a model streams: a token or a few, sometimes a line or more,
/// with JSON escapes and multi-byte characters.
const DELTAS: [&str; 6] = [
    "g",
    "ato, luna, café",
    " the scanner skips",
    " text deltas without buffering them,\\n\\n",
    " so a long answer costs no more memory than a short one — \\\"constant\\\" memory.",
    " Here is a longer delta, as models send when they are fast: several words, a number (42), and punctuation; it is still one event.",
];

/// About `target` bytes of stream, as a list of events (each a complete `event:`/`data:`
/// block), so it can be fed per event or re-cut into fixed-size reads.
fn events(target: usize) -> Vec<String> {
    let split =
        |text: &str| -> Vec<String> { text.split_inclusive("\n\n").map(str::to_owned).collect() };
    let mut events = split(HEAD);
    let mut size: usize = events.iter().map(String::len).sum();
    let mut i = 0;
    while size < target {
        let event = if i % 50 == 49 {
            "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned()
        } else {
            format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
                DELTAS[i % DELTAS.len()]
            )
        };
        size += event.len();
        events.push(event);
        i += 1;
    }
    events.extend(split(TAIL));
    events
}

fn feed_all(chunks: &[&[u8]]) -> u64 {
    let mut scanner = SseScanner::new();
    for chunk in chunks {
        scanner.feed(black_box(chunk));
    }
    let summary = scanner.summary();
    summary.usage.output_tokens + u64::from(summary.message_stop)
}

fn scanner(c: &mut Criterion) {
    let events = events(4 << 20);
    let stream: Vec<u8> = events.concat().into_bytes();
    // The answer must be right before its speed means anything.
    assert_eq!(feed_all(&[&stream]), 9 + 1);

    let mut group = c.benchmark_group("sse_scanner");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    let per_event: Vec<&[u8]> = events.iter().map(|e| e.as_bytes()).collect();
    group.bench_function(BenchmarkId::new("feed", "one event per chunk"), |b| {
        b.iter(|| feed_all(&per_event))
    });
    for size in [1024, 16 * 1024] {
        let reads: Vec<&[u8]> = stream.chunks(size).collect();
        group.bench_function(
            BenchmarkId::new("feed", format!("{} KiB reads", size / 1024)),
            |b| b.iter(|| feed_all(&reads)),
        );
    }
    group.finish();
}

criterion_group!(benches, scanner);
criterion_main!(benches);
