//! Criterion benchmark of the relay path: one Messages request at a time over a keep-alive
//! connection, through the proxy (`relay/json`, `relay/stream`) and straight to the mock
//! upstream (`direct/json`, `direct/stream`), each answer read to its last byte. The difference
//! between a `relay/*` figure and its `direct/*` one is the proxy's own cost per request:
//! routing, the account's headers, the relay of the body, the SSE scanner, the record handed
//! to the writer. Figures in `docs/benchmarks.md` ("The relay path"). Run with
//! `cargo bench -p ccflare-proxy --bench relay`.
//!
//! Everything is real and in this process: the mock upstream and the proxy on `127.0.0.1:0`,
//! one API-key account in a SQLite file in a temp dir, the batched writer writing every row.
//! The servers share a multi-threaded runtime (as in `ccflare-server`); the client runs on its
//! own single-threaded runtime on the bench's thread, so its work does not queue behind theirs.
//!
//! Run as a test (`cargo test --benches`, without `--bench`), it checks instead that a few
//! requests each way are answered whole and that the writer recorded one row per request the
//! proxy relayed.

use bytes::Bytes;
use ccflare_proxy::UpstreamClient;
use ccflare_storage::{Writer, requests};
use ccflare_testkit::http::{TestClient, anthropic_post};
use ccflare_testkit::proxy::{Fixture, Running};
use ccflare_testkit::sse::parse_events;
use ccflare_testkit::{GUARD, Message, Reply, client, eventually, key};
use criterion::Criterion;
use http::StatusCode;
use http_body_util::BodyExt;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// The one account's name; its key is [`key`]`(ACCOUNT)`.
const ACCOUNT: &str = "alpha";

/// Requests of each kind, each way, in the check run.
const CHECK_REQUESTS: usize = 5;

/// The answer's text, as `ccflare-bench` asks for it: fourteen words, so a stream is 20
/// events (`message_start`, `content_block_start`, `ping`, a delta per word,
/// `content_block_stop`, `message_delta`, `message_stop`), the shape of its figures.
const TEXT: &str = "The quick brown fox jumps over the lazy dog while five wizards box quickly.";

/// The question, repeated three times: a body of about 640 bytes, a short chat turn like
/// `ccflare-bench`'s.
const QUESTION: &str = "Summarise the trade-offs between open-loop and closed-loop load \
                        generation for measuring the latency a reverse proxy adds, and explain \
                        coordinated omission with a short example. ";

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let servers = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the servers' runtime");
    let clients = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    let running = servers.block_on(start());
    let bench = Bench {
        relay: format!("{}/v1/messages", running.url),
        direct: format!("{}/v1/messages", running.mock.url()),
        // Used only inside the client's runtime, where its connections' tasks are spawned.
        client: client(),
        json: body(false),
        stream: body(true),
    };
    if full {
        measure(&bench, &clients);
    } else {
        check(&bench, &clients, &servers, &running);
    }
    drop(bench);
    drop(clients);
    servers.block_on(running.stop());
}

fn body(stream: bool) -> Bytes {
    let message = Message::new("claude-haiku-4-5")
        .max_tokens(1024)
        .content(&QUESTION.repeat(3))
        .stream(stream);
    Bytes::from(message.body())
}

/// The mock upstream and the proxy in front of it, with one API-key account and the real
/// writer on a SQLite file.
async fn start() -> Running {
    let fixture = Fixture::start().await;
    fixture.add_api_keys(&[(ACCOUNT, 0)]).await;
    let writer = Writer::spawn(fixture.db.clone());
    // The wall clock, as a running server reads it (the fixture's manual clock is for tests
    // that move time by hand).
    let upstream =
        UpstreamClient::new(&fixture.mock.url(), Duration::from_secs(5)).expect("upstream client");
    let state = ccflare_testkit::proxy::wall_clock_state(
        &writer,
        upstream,
        ccflare_testkit::proxy::config(),
    );
    state
        .sync_accounts(&fixture.db)
        .await
        .expect("accounts load");
    fixture.serve(state, writer).await
}

/// Where the requests go and what they carry: one client, so one keep-alive connection to
/// the proxy and one to the mock.
struct Bench {
    relay: String,
    direct: String,
    client: TestClient,
    json: Bytes,
    stream: Bytes,
}

#[derive(Debug, Clone, Copy)]
enum Way {
    Relay,
    Direct,
}

impl Bench {
    /// A Messages request the way a client sends it: through the proxy with the client's own
    /// key (which the proxy replaces), or to the mock with the account's.
    fn request(&self, way: Way, stream: bool) -> http::Request<http_body_util::Full<Bytes>> {
        let body = if stream { &self.stream } else { &self.json };
        let headers = [("x-mock-text", TEXT)];
        match way {
            Way::Relay => anthropic_post(&self.relay, "client-key", &headers, body.clone()),
            Way::Direct => anthropic_post(&self.direct, &key(ACCOUNT), &headers, body.clone()),
        }
    }

    /// One request, its body read frame by frame to the end without copying: the bytes read.
    async fn once(&self, way: Way, stream: bool) -> usize {
        let response = self
            .client
            .request(self.request(way, stream))
            .await
            .expect("response");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{way:?}, stream {stream}"
        );
        let mut body = response.into_body();
        let mut read = 0;
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.expect("body").data_ref() {
                read += data.len();
            }
        }
        read
    }

    /// One request, the whole answer kept, within the guard.
    async fn reply(&self, way: Way, stream: bool) -> Reply {
        let response = tokio::time::timeout(GUARD, self.client.request(self.request(way, stream)))
            .await
            .expect("an answer in time")
            .expect("response");
        Reply::read(response).await
    }
}

fn measure(bench: &Bench, clients: &Runtime) {
    // Short runs: the four take well under a minute, and a regression of the proxy's own cost
    // (tens of microseconds) still shows against the noise of a shared machine.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50)
        .configure_from_args();
    // Each direct figure right before its relayed one, so both see the same machine.
    for (name, way, stream) in [
        ("direct/json", Way::Direct, false),
        ("relay/json", Way::Relay, false),
        ("direct/stream", Way::Direct, true),
        ("relay/stream", Way::Relay, true),
    ] {
        criterion.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                clients.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        black_box(bench.once(way, stream).await);
                    }
                    started.elapsed()
                })
            })
        });
    }
    criterion.final_summary();
}

/// The test run: every answer whole, and one row per relayed request.
fn check(bench: &Bench, clients: &Runtime, servers: &Runtime, running: &Running) {
    // The last stream's shape (events, bytes), for the report below.
    let shape = clients.block_on(async {
        let mut shape = (0, 0);
        for way in [Way::Direct, Way::Relay] {
            for _ in 0..CHECK_REQUESTS {
                let reply = bench.reply(way, false).await;
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "{way:?} JSON: {}",
                    reply.text()
                );
                let usage = &reply.json()["usage"];
                assert!(
                    usage.is_object(),
                    "{way:?} JSON without usage: {}",
                    reply.text()
                );
                assert_eq!(usage["output_tokens"].as_u64(), Some(14), "{usage}");

                let reply = bench.reply(way, true).await;
                assert_eq!(
                    reply.status,
                    StatusCode::OK,
                    "{way:?} stream: {}",
                    reply.text()
                );
                let events = parse_events(reply.text());
                let last = events.last().map(|(name, _)| name.as_str());
                assert_eq!(
                    last,
                    Some("message_stop"),
                    "{way:?} stream: {}",
                    reply.text()
                );
                // The same bytes the bench counts.
                assert_eq!(bench.once(way, true).await, reply.body.len());
                shape = (events.len(), reply.body.len());
            }
        }
        shape
    });
    // Three relayed requests per round (JSON, a stream read whole, a stream counted), and as
    // many direct ones: all of them reached the mock, only the relayed ones were recorded.
    let relayed = 3 * CHECK_REQUESTS;
    assert_eq!(running.mock.requests().len(), 2 * relayed);
    servers.block_on(async {
        // A row is handed to the writer when its answer ends, which may be just after the
        // client read the last byte: flush until all are in.
        let rows = eventually(GUARD, "a row for every relayed request", || async {
            running.state.writer.flush().await;
            let rows = requests::count(&running.db).await.expect("count");
            (rows >= relayed as i64).then_some(rows)
        })
        .await;
        assert_eq!(rows, relayed as i64, "one row per relayed request");
        let records = requests::recent(&running.db, 100).await.expect("rows");
        for record in &records {
            assert_eq!(record.status, 200, "{record:?}");
            assert!(record.success, "{record:?}");
            assert_eq!(record.account_name.as_deref(), Some(ACCOUNT), "{record:?}");
            assert_eq!(record.usage.output_tokens, 14, "{record:?}");
        }
        let streamed = records.iter().filter(|r| r.streamed).count();
        assert_eq!(streamed, 2 * CHECK_REQUESTS, "streamed rows");
    });
    println!(
        "relay check: {CHECK_REQUESTS} JSON and {} streamed requests ({} events, {} bytes each) \
         each way answered whole; {relayed} rows",
        2 * CHECK_REQUESTS,
        shape.0,
        shape.1
    );
}
