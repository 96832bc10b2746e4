//! The load generator. Open loop: requests start on a fixed schedule whatever the answers do,
//! and each latency is measured from the request's *intended* start, so a stalled server makes
//! every request scheduled behind the stall slow too (no coordinated omission). Like a real
//! client, the generator uses at most a fixed number of connections: a request that finds them
//! all busy waits for one, and that wait is part of its latency. (Without the cap an overloaded
//! target makes the generator open thousands of connections and measure its own connect storm.)
//!
//! A phase sends one kind of request, or a [`Mix`] of kinds in a fixed, repeating pattern (the
//! soak's JSON, streams and hang-ups), so every stretch of the run has the same mix.
//!
//! The schedule is kept by a dedicated thread that sleeps with the OS's precision (tens of
//! microseconds) rather than the runtime timer's millisecond ticks, and hands each request to
//! the runtime as a task.

use crate::stats::{PhaseData, Sample};
use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client whose pool keeps up to `connections` idle connections, so a phase reuses them
/// instead of paying a connect per request.
pub fn client(connections: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// What a complete answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A whole JSON body.
    Json,
    /// An SSE stream that ends with `message_stop`.
    Stream,
    /// A successful stream the client hangs up on after its first body frame, as a person
    /// pressing Esc does: the body is dropped unread, which closes the connection.
    HangUp,
}

/// One kind of request, sent many times.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    pub expect: Expect,
    /// Longest a request may take, headers to last byte.
    pub timeout: Duration,
}

impl RequestSpec {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        request
    }
}

/// Sends one request and reads its answer to the end (or, for a hang-up, to its first frame).
async fn one(client: &HttpClient, spec: &RequestSpec, kind: usize, intended: Instant) -> Sample {
    let started = Instant::now();
    let mut sample = Sample {
        latency: Duration::ZERO,
        ttfb: None,
        lag: started.saturating_duration_since(intended),
        bytes: 0,
        error: None,
        request_id: None,
        kind,
        ended: started,
    };
    let exchanged = tokio::time::timeout(spec.timeout, exchange(client, spec, &mut sample)).await;
    let ended = Instant::now();
    sample.ended = ended;
    sample.latency = ended.saturating_duration_since(intended);
    match exchanged {
        Ok(Ok(first_byte)) => {
            sample.ttfb = first_byte.map(|at| at.saturating_duration_since(intended));
        }
        Ok(Err(kind)) => sample.error = Some(kind),
        Err(_) => sample.error = Some("timeout".into()),
    }
    sample
}

/// The request/answer exchange; returns when the first body byte came.
async fn exchange(
    client: &HttpClient,
    spec: &RequestSpec,
    sample: &mut Sample,
) -> Result<Option<Instant>, String> {
    let response = client.request(spec.request()).await.map_err(|error| {
        if error.is_connect() {
            "connect failed".to_owned()
        } else {
            "request failed".to_owned()
        }
    })?;
    sample.request_id = response
        .headers()
        .get("x-ccflare-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    // The last bytes seen, to check the ending without keeping the body.
    let mut tail = BytesMut::with_capacity(128);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| "body broken".to_owned())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        first_byte.get_or_insert_with(Instant::now);
        sample.bytes += data.len() as u64;
        if spec.expect == Expect::HangUp {
            if !status.is_success() {
                return Err(format!("status {}", status.as_u16()));
            }
            // Dropping `body` here, mid-stream, is the hang-up.
            return Ok(first_byte);
        }
        if data.len() >= 64 {
            tail.clear();
            tail.extend_from_slice(&data[data.len() - 64..]);
        } else {
            tail.extend_from_slice(&data);
            if tail.len() > 64 {
                let excess = tail.len() - 64;
                let _ = tail.split_to(excess);
            }
        }
    }
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    let complete = match spec.expect {
        Expect::Json => tail.trim_ascii_end().ends_with(b"}"),
        Expect::Stream => tail.windows(12).any(|w| w == b"message_stop"),
        // The stream ended before the client could hang up on it.
        Expect::HangUp => false,
    };
    if !complete {
        return Err(match spec.expect {
            Expect::Json => "incomplete JSON body".into(),
            Expect::Stream => "stream without message_stop".into(),
            Expect::HangUp => "stream ended before the hang-up".into(),
        });
    }
    Ok(first_byte)
}

struct Shared {
    samples: Mutex<Vec<Sample>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    not_sent: AtomicUsize,
}

impl Shared {
    fn push(&self, sample: Sample) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sample);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends `count` requests at `rate` per second, open loop, over at most `connections`
/// connections, and waits for every answer (each bounded by the spec's timeout). At most
/// `max_in_flight` requests are scheduled and unanswered at once (waiting for a connection
/// included); requests beyond that are counted as not sent, so a stalled target cannot make
/// the generator's memory grow without bound.
pub async fn open_loop(
    client: &HttpClient,
    spec: &RequestSpec,
    rate: f64,
    count: u64,
    connections: usize,
    max_in_flight: usize,
) -> PhaseData {
    let mix = Mix {
        specs: vec![spec.clone()],
        pattern: vec![0],
    };
    open_loop_mix(client, &mix, rate, count, connections, max_in_flight).await
}

/// Several kinds of request in one schedule: request `i` is `specs[pattern[i % len]]`, so the
/// mix is the same, and evenly spread, in every stretch of the run.
#[derive(Debug, Clone)]
pub struct Mix {
    pub specs: Vec<RequestSpec>,
    /// Indexes into `specs`; must not be empty.
    pub pattern: Vec<usize>,
}

impl Mix {
    /// How many of the first `count` requests are `specs[kind]`.
    pub fn count_of(&self, kind: usize, count: u64) -> u64 {
        let len = self.pattern.len() as u64;
        let per_cycle = self.pattern.iter().filter(|&&k| k == kind).count() as u64;
        let rest = (count % len) as usize;
        let in_rest = self.pattern[..rest].iter().filter(|&&k| k == kind).count() as u64;
        count / len * per_cycle + in_rest
    }
}

/// [`open_loop`] over a [`Mix`]: each sample carries the index of its spec as its `kind`.
pub async fn open_loop_mix(
    client: &HttpClient,
    mix: &Mix,
    rate: f64,
    count: u64,
    connections: usize,
    max_in_flight: usize,
) -> PhaseData {
    let longest_timeout = mix
        .specs
        .iter()
        .map(|spec| spec.timeout)
        .max()
        .unwrap_or_default();
    let connections = Arc::new(Semaphore::new(connections.max(1)));
    let shared = Arc::new(Shared {
        samples: Mutex::new(Vec::with_capacity(count as usize)),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        not_sent: AtomicUsize::new(0),
    });
    let runtime = tokio::runtime::Handle::current();
    // A few milliseconds of slack so the first request is not already late.
    let start = Instant::now() + Duration::from_millis(5);
    let interval = 1.0 / rate.max(0.001);
    let dispatcher = {
        let shared = shared.clone();
        let client = client.clone();
        let specs: Vec<Arc<RequestSpec>> = mix.specs.iter().cloned().map(Arc::new).collect();
        let pattern = mix.pattern.clone();
        let connections = connections.clone();
        tokio::task::spawn_blocking(move || {
            for i in 0..count {
                let kind = pattern[(i % pattern.len() as u64) as usize];
                let intended = start + Duration::from_secs_f64(i as f64 * interval);
                let now = Instant::now();
                if intended > now {
                    // This is a dedicated blocking-pool thread, not a runtime worker: sleeping
                    // here is how the schedule gets sub-millisecond precision.
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(intended - now);
                }
                let in_flight = shared.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
                if in_flight > max_in_flight {
                    shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                    shared.not_sent.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                shared.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
                let shared = shared.clone();
                let client = client.clone();
                let spec = specs[kind].clone();
                let connections = connections.clone();
                runtime.spawn(async move {
                    // The semaphore is never closed, so the permit always comes.
                    let permit = connections.acquire_owned().await;
                    let sample = one(&client, &spec, kind, intended).await;
                    drop(permit);
                    shared.push(sample);
                });
            }
        })
    };
    let _ = dispatcher.await;
    // Every request has its own timeout, so this ends; the bound is a second line of defence.
    let deadline = Instant::now() + longest_timeout + Duration::from_secs(5);
    while shared.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = start.elapsed();
    let samples = std::mem::take(
        &mut *shared
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let mut data = PhaseData {
        samples,
        not_sent: shared.not_sent.load(Ordering::Relaxed) as u64,
        target_rate: rate,
        wall,
        max_in_flight: shared.max_in_flight.load(Ordering::Relaxed),
    };
    // Requests still running past the deadline (should never happen) count as errors.
    let unfinished = shared.in_flight.load(Ordering::Acquire);
    for _ in 0..unfinished {
        data.samples.push(Sample {
            latency: wall,
            ttfb: None,
            lag: Duration::ZERO,
            bytes: 0,
            error: Some("unfinished at the deadline".into()),
            request_id: None,
            kind: 0,
            ended: Instant::now(),
        });
    }
    data
}
