//! What an operator's tools read (issue 14, docs/deployment.md): `ccflare-server healthcheck`
//! against a running, a degraded and a stopped server; secrets read from files and from
//! systemd's credentials directory; readiness sent to a (fake) systemd.

mod common;

use ccflare_testkit::key;
use ccflare_testkit::process::Server;
use common::{mock, proxy_command, run_to_end, server_command};
use std::path::Path;
use tokio::process::Command;

/// The port of a server's URL (`http://127.0.0.1:PORT`).
fn port_of(server: &Server) -> String {
    server.url.rsplit(':').next().unwrap().to_owned()
}

/// `ccflare-server healthcheck` configured, as the server was, by the environment.
fn healthcheck(dir: &Path, port: &str, args: &[&str]) -> Command {
    let mut command = server_command(dir);
    command.env("PORT", port).arg("healthcheck").args(args);
    command
}

#[tokio::test]
async fn healthcheck_says_ready_for_a_running_server_and_not_for_a_stopped_one() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(proxy_command(dir.path(), &upstream, &[key("one")])).await;
    let port = port_of(&server);

    let (code, out, err) = run_to_end(healthcheck(dir.path(), &port, &[])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    assert!(out.contains("1/1 accounts available"), "{out}");
    let (code, out, _) = run_to_end(healthcheck(dir.path(), &port, &["--strict"])).await;
    assert_eq!((code, out.starts_with("ok: ")), (Some(0), true), "{out}");

    server.terminate().await;
    let (code, out, err) = run_to_end(healthcheck(dir.path(), &port, &["--timeout", "2"])).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("not ready: http://127.0.0.1:"), "{err}");
}

#[tokio::test]
async fn a_degraded_server_is_ready_unless_strict() {
    // No account: the server answers, /health says degraded. Restarting it would not add an
    // account, so the plain check says ready (and why not ok); --strict says not ready.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(server_command(dir.path())).await;
    let port = port_of(&server);

    let (code, out, err) = run_to_end(healthcheck(dir.path(), &port, &[])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("degraded: "), "{out}");
    assert!(out.contains("no account available"), "{out}");
    let (code, out, err) = run_to_end(healthcheck(dir.path(), &port, &["--strict"])).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.starts_with("degraded: "), "{err}");

    server.terminate().await;
}

#[tokio::test]
async fn healthcheck_fails_with_status_1_when_its_configuration_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = healthcheck(dir.path(), "eighty", &[]);
    command.env("HOST", "127.0.0.1");
    let (code, out, err) = run_to_end(command).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("PORT"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
