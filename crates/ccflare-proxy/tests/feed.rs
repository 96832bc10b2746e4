//! The seams the management API uses: the live request feed publishes every request's start
//! and then its end, in order, and a path outside `/v1/*` and `/health` reaches the installed
//! management routes (404 without them).

mod common;

use bytes::Bytes;
use ccflare_core::record::RequestRecord;
use ccflare_proxy::{
    AppState, ManagementFuture, ManagementRoutes, RequestEvent, RequestObserver, ResponseBody,
};
use ccflare_testkit::GUARD;
use common::{Options, spawn_app};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn next(rx: &mut tokio::sync::broadcast::Receiver<RequestEvent>) -> RequestEvent {
    tokio::time::timeout(GUARD, rx.recv())
        .await
        .expect("an event in time")
        .expect("the feed is open")
}

#[tokio::test]
async fn every_request_is_published_when_it_starts_and_when_it_ends() {
    let app = spawn_app(Options::default()).await;
    let mut feed = app.state.subscribe_requests();
    let first = app.post(&[("x-session-id", "s-1")], false).await;
    let second = app.post(&[], true).await;
    for reply in [&first, &second] {
        let id = reply.header("x-ccflare-request-id");
        match next(&mut feed).await {
            RequestEvent::Started(started) => {
                assert_eq!(started.id, id);
                assert_eq!(started.model.as_deref(), Some("claude-sonnet-4-5"));
            }
            other => panic!("expected the start of {id}, got {other:?}"),
        }
        match next(&mut feed).await {
            RequestEvent::Finished(record) => {
                assert_eq!((record.id.as_str(), record.status), (id, 200));
                assert_eq!(record.usage.output_tokens, 5);
            }
            other => panic!("expected the end of {id}, got {other:?}"),
        }
    }
    app.stop().await;
}

struct Echo {
    finished: AtomicUsize,
}

impl ManagementRoutes for Echo {
    fn handle(&self, _state: Arc<AppState>, request: Request<Incoming>) -> ManagementFuture {
        let path = request.uri().path().to_owned();
        Box::pin(async move { Response::new(ResponseBody::full(format!("managed {path}"))) })
    }
}

impl RequestObserver for Echo {
    fn request_finished(&self, _record: &RequestRecord) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn other_paths_go_to_the_management_routes() {
    let app = spawn_app(Options::default()).await;
    let reply = app.get("/api/anything").await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "no management routes yet"
    );

    let echo = Arc::new(Echo {
        finished: AtomicUsize::new(0),
    });
    assert!(app.state.set_management(echo.clone()));
    assert!(!app.state.set_management(echo.clone()), "set once");
    let reply = app.get("/api/anything").await;
    assert_eq!(reply.body, Bytes::from("managed /api/anything"));
    let health = app.get("/health").await;
    assert_eq!(health.json()["status"], "ok", "/health stays the proxy's");

    app.post(&[], false).await;
    assert_eq!(echo.finished.load(Ordering::SeqCst), 1);
    app.stop().await;
}
