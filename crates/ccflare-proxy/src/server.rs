//! The HTTP server: accepts connections (TCP_NODELAY, HTTP/1.1 keep-alive, a header-read
//! timeout), routes `/v1/*` to the forwarder, `/health` to the health answer and everything else
//! to the management API when one is installed, and shuts down
//! gracefully: stop accepting, let in-flight responses finish up to the deadline, then cut the
//! rest (their records are still written, as the server's cut: `error_type = shutdown_cut`).

use crate::body::ResponseBody;
use crate::forward::forward;
use crate::shutdown::Drain;
use crate::state::AppState;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open at the deadline and cut.
    pub cut_connections: usize,
}

/// Serves until `shutdown` completes, then drains. Returns once every connection is closed.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let limits = Limits {
        max_connections: state.config.max_connections,
        shutdown_timeout: state.config.shutdown_timeout,
    };
    let drain = state.drain();
    let handler = move |request| route(state.clone(), request);
    serve_connections(listener, limits, &drain, handler, shutdown).await
}

/// What bounds the connection loop.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    max_connections: usize,
    /// How long open connections get to finish once shutdown starts.
    shutdown_timeout: Duration,
}

/// The connection loop: accepts up to the limit, serves each connection with `handler` in a
/// task it owns, and at `shutdown` stops accepting, signals `drain`, waits for the
/// connections up to the deadline and cuts the rest. It knows nothing else of the server.
async fn serve_connections<H, F>(
    listener: TcpListener,
    limits: Limits,
    drain: &Drain,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Response<ResponseBody>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let max_connections = limits.max_connections;
    // Whether the limit was reached since the last time it was logged (once per episode).
    let mut at_limit = false;
    tokio::pin!(shutdown);
    loop {
        // Finished connections leave the count at once, not one per turn of the loop.
        while connections.try_join_next().is_some() {}
        let accepting = connections.len() < max_connections;
        if !accepting && !at_limit {
            tracing::warn!(
                max_connections,
                "connection limit reached; new connections wait until one closes"
            );
        }
        at_limit = !accepting || (at_limit && connections.len() > max_connections / 2);
        tokio::select! {
            accepted = listener.accept(), if accepting => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait a moment instead of spinning.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let mut stopping = drain.subscribe();
                // The log lines of the requests a poll finished are written after it; a poll
                // that woke its own task is followed by another at once (`quiet.rs`).
                connections.spawn(crate::after_poll::scope(crate::quiet::quietly(async move {
                    let service = service_fn(move |mut request: Request<Incoming>| {
                        // Whether forwarded headers are believed depends on the peer.
                        request.extensions_mut().insert(crate::resources::Peer(peer));
                        let answer = handler(request);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let connection = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    tokio::select! {
                        result = connection.as_mut() => {
                            if let Err(error) = result {
                                tracing::debug!(%peer, %error, "connection ended with an error");
                            }
                        }
                        _ = stopping.recv() => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                })));
            }
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    // Connections finish their current response and close; live feeds, which never end by
    // themselves, end too, so that their connections can close.
    drain.stop();
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    let cut_connections = if drained.is_err() {
        connections.len()
    } else {
        0
    };
    if cut_connections > 0 {
        tracing::warn!(
            cut_connections,
            "shutdown deadline passed; closing the remaining connections"
        );
        // Before any of them is dropped, so that their records name the server as the cause.
        drain.begin_cut();
    }
    connections.shutdown().await;
    ShutdownReport { cut_connections }
}

async fn route(state: Arc<AppState>, request: Request<Incoming>) -> Response<ResponseBody> {
    let path = request.uri().path();
    if path.starts_with("/v1/") {
        return forward(state, request).await;
    }
    if path == "/health" && matches!(request.method(), &Method::GET | &Method::HEAD) {
        let details = state
            .management()
            .is_some_and(|management| management.admits(&state, request.headers()));
        return health(&state, details);
    }
    if let Some(management) = state.management() {
        let management = management.clone();
        return management.handle(state, request).await;
    }
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({
            "error": { "type": "not_found_error", "message": format!("no route for {} {}", request.method(), path) }
        }),
    )
}

/// What `/health` says in place of a database error's text to a caller without the
/// management API's admission: the text may name paths, files and SQLite's own words.
const WITHHELD: &str = "withheld: ask with the admin key";

/// The server's state for load balancers and `doctor`: status, account counts, the database's
/// state. Error texts only with `details` (a caller the management API admits); others learn
/// that there is an error, not what it says.
fn health(state: &AppState, details: bool) -> Response<ResponseBody> {
    let counts = state.pool().counts(state.now());
    let writer = state.writer.health().borrow().clone();
    let totals = state.writer.totals();
    let status = if counts.available > 0 && writer.is_ok() && totals.dropped == 0 {
        "ok"
    } else {
        "degraded"
    };
    let mut database = serde_json::json!({
        "writable": writer.failing.is_none(),
        "waiting_records": state.writer.queue_depth(),
        "spilled_records": writer.spilled_waiting,
        "rejected_records": totals.rejected,
        "dropped_records": totals.dropped,
        "unsaved_logins": state.unsaved_logins().len(),
    });
    let text = |text: String| if details { text } else { WITHHELD.to_owned() };
    if let Some(error) = writer.failing {
        database["error"] = text(error).into();
    }
    if let Some(damage) = writer.damaged {
        database["damaged"] = text(damage).into();
    }
    if let Some(error) = writer.spill_failing {
        database["spill_error"] = text(error).into();
    }
    json(
        StatusCode::OK,
        serde_json::json!({
            "status": status,
            "accounts": {
                "total": counts.total,
                "available": counts.available,
                "rate_limited": counts.rate_limited + counts.overloaded,
                "paused": counts.paused,
                "invalid": counts.invalid,
            },
            "database": database,
            "version": env!("CARGO_PKG_VERSION"),
            "revision": state.revision(),
            "uptime_s": state.started.elapsed().as_secs(),
        }),
    )
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
