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
    let (code, _, err) = run_to_end(healthcheck(dir.path(), "8080", &["--timeout", "0"])).await;
    assert_eq!(code, Some(1), "{err}");
}

const ADMIN: &str = "0123456789abcdef-admin-from-a-file";

/// `GET {url}/api/accounts` with `admin` as the bearer key (none if empty): the status.
async fn api_status(url: &str, admin: &str) -> u16 {
    let bearer = format!("Bearer {admin}");
    let headers: &[(&str, &str)] = if admin.is_empty() {
        &[]
    } else {
        &[("authorization", &bearer)]
    };
    let request = ccflare_testkit::http::request(
        http::Method::GET,
        &format!("{url}/api/accounts"),
        headers,
        "",
    );
    ccflare_testkit::send(request).await.status.as_u16()
}

#[tokio::test]
async fn secrets_come_from_files_named_by_variables() {
    // The container's way: HOST=0.0.0.0, the admin key and the API keys in secret files.
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("admin_key"), format!("{ADMIN}\n")).unwrap();
    std::fs::write(
        secrets.join("api_keys"),
        format!("{}\n{}\n", key("one"), key("two")),
    )
    .unwrap();
    common::with_a_client_key(&common::db_path(dir.path())).await;
    let mut command = proxy_command(dir.path(), &upstream, &[]);
    command
        .env("HOST", "0.0.0.0")
        .env("CCFLARE_ADMIN_KEY_FILE", secrets.join("admin_key"))
        .env("CLAUDE_API_KEYS_FILE", secrets.join("api_keys"));
    let server = Server::start(command).await;
    assert!(
        server.banner.contains("2 total: 2 active"),
        "{}",
        server.banner
    );
    let url = server.url.replace("0.0.0.0", "127.0.0.1");
    assert_eq!(api_status(&url, "").await, 401);
    assert_eq!(api_status(&url, ADMIN).await, 200);
    // The healthcheck of the same configuration finds it.
    let mut check = healthcheck(dir.path(), &port_of(&server), &[]);
    check
        .env("HOST", "0.0.0.0")
        .env("CCFLARE_ADMIN_KEY_FILE", secrets.join("admin_key"));
    let (code, out, err) = run_to_end(check).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let rest = server.terminate().await;
    assert!(!rest.contains(ADMIN), "{rest}");
}

#[tokio::test]
async fn secrets_come_from_systemd_credentials_and_flags() {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    // LoadCredential=admin_key:… and LoadCredential=api_keys:… put them here.
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    std::fs::write(credentials.join("admin_key"), ADMIN).unwrap();
    std::fs::write(credentials.join("api_keys"), format!("{}\n", key("one"))).unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[]);
    command.env("CREDENTIALS_DIRECTORY", &credentials);
    let server = Server::start(command).await;
    assert!(
        server.banner.contains("1 total: 1 active"),
        "{}",
        server.banner
    );
    assert_eq!(api_status(&server.url, "").await, 401);
    assert_eq!(api_status(&server.url, ADMIN).await, 200);
    server.terminate().await;

    let flag_key = "0123456789abcdef-admin-by-flag";
    let file = dir.path().join("flag-admin");
    std::fs::write(&file, flag_key).unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[]);
    command.arg("--admin-key-file").arg(&file);
    let server = Server::start(command).await;
    assert_eq!(api_status(&server.url, flag_key).await, 200);
    assert_eq!(api_status(&server.url, ADMIN).await, 401);
    server.terminate().await;
}

#[tokio::test]
async fn an_unreadable_secret_file_is_one_line_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-secret");
    let mut command = server_command(dir.path());
    command
        .env("HOST", "0.0.0.0")
        .env("CCFLARE_ADMIN_KEY_FILE", &missing);
    let (code, out, err) = run_to_end(command).await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "CCFLARE_ADMIN_KEY_FILE: cannot read {}",
            missing.display()
        )),
        "{err}"
    );

    // A missing admin key on 0.0.0.0 says where to put it.
    let mut command = server_command(dir.path());
    command.env("HOST", "0.0.0.0");
    let (code, _, err) = run_to_end(command).await;
    assert_ne!(code, Some(0));
    assert!(err.contains("CCFLARE_ADMIN_KEY_FILE"), "{err}");
}

/// The next datagram on `socket`, as text, within the guard.
async fn next_notification(socket: &tokio::net::UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(ccflare_testkit::PROCESS_GUARD, socket.recv(&mut buffer))
        .await
        .expect("a notification in time")
        .expect("recv");
    String::from_utf8(buffer[..n].to_vec()).unwrap()
}

/// Runs a server notifying `socket_name` (what NOTIFY_SOCKET holds) and checks what systemd
/// would see: READY=1 once it serves and the database exists, STOPPING=1 at SIGTERM.
async fn notifies_systemd(socket: tokio::net::UnixDatagram, socket_name: &std::ffi::OsStr) {
    let upstream = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = proxy_command(dir.path(), &upstream, &[key("one")]);
    command.env("NOTIFY_SOCKET", socket_name);
    let server = Server::start(command).await;
    let ready = next_notification(&socket).await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=listening on {}", server.url)),
        "{ready:?}"
    );
    assert!(common::db_path(dir.path()).exists());
    let health =
        ccflare_testkit::send(ccflare_testkit::get(&format!("{}/health", server.url))).await;
    assert_eq!(health.status, 200);
    server.sigterm();
    let stopping = next_notification(&socket).await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let (code, rest) = server.terminate_after_signal().await;
    assert_eq!(code, Some(0), "{rest}");
}

#[tokio::test]
async fn ready_is_sent_to_a_systemd_notify_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
    notifies_systemd(socket, path.as_os_str()).await;
}

#[tokio::test]
async fn ready_is_sent_to_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("ccflare-deploy-test-{}", std::process::id());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
    socket.set_nonblocking(true).unwrap();
    let socket = tokio::net::UnixDatagram::from_std(socket).unwrap();
    notifies_systemd(socket, format!("@{name}").as_ref()).await;
}

/// What `git rev-parse` says the checkout is, when git and a checkout are there.
fn git_revision() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8(output.stdout).ok()?.trim().to_owned())
}

#[tokio::test]
async fn version_and_health_name_the_git_revision() {
    let dir = tempfile::tempdir().unwrap();
    let mut version = server_command(dir.path());
    version.arg("--version");
    let (code, out, _) = run_to_end(version).await;
    assert_eq!(code, Some(0));
    let revision = out
        .trim()
        .strip_prefix(&format!(
            "ccflare-server {} (rev ",
            env!("CARGO_PKG_VERSION")
        ))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no revision in {out:?}"))
        .to_owned();
    // Built from this checkout unless GIT_REVISION named another revision.
    if std::env::var_os("GIT_REVISION").is_none()
        && let Some(checkout) = git_revision()
    {
        assert_eq!(revision, checkout);
    }
    let server = Server::start(server_command(dir.path())).await;
    assert!(
        server.banner.contains(&format!("(rev {revision})")),
        "{}",
        server.banner
    );
    let health =
        ccflare_testkit::send(ccflare_testkit::get(&format!("{}/health", server.url))).await;
    assert_eq!(health.json()["revision"], revision.as_str());
    assert_eq!(health.json()["version"], env!("CARGO_PKG_VERSION"));
    server.terminate().await;
}
