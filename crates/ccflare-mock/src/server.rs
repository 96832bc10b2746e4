//! The accept loop: one HTTP/1.1 keep-alive connection task per accepted socket, all owned by
//! a `JoinSet` so that shutting the mock down closes every connection, hanging ones included.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handler;
use crate::state::State;

/// Serves until `shutdown` turns true or its sender is dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&state)));
                }
                Err(error) => {
                    // Typically out of file descriptors; pausing avoids a hot error loop
                    // while connections close.
                    tracing::warn!(%error, "mock upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts the connection tasks.
    drop(connections);
}

async fn serve_connection(stream: TcpStream, state: Arc<State>) {
    // SSE events are small writes that must leave at once, as a real upstream sends them.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "mock upstream could not set TCP_NODELAY");
    }
    let service = service_fn(move |request| handler::handle(Arc::clone(&state), request));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(error) = connection.await {
        // Client disconnects and planned mid-body drops end up here; both are routine.
        tracing::debug!(%error, "mock upstream connection ended with an error");
    }
}
