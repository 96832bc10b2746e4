//! The files in `deploy/` read by the real tools that will read them (issue 14): the systemd
//! unit by `systemd-analyze`, the nginx site by nginx in front of a real `ccflare-server`, and
//! the Dockerfile and compose file (no Docker daemon here) checked for what matters. A tool
//! that is missing skips its test locally and fails it when `CI` is set (`.ci/run` installs
//! them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// `deploy/<path>` in the workspace.
fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_file(path)).expect("the deploy file exists")
}

/// Whether `tool` is installed (it runs at all: `nginx` has no `--version`, so its answer is
/// not judged); when it is not, the test passes locally and fails under CI.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing and CI is set: .ci/run installs it"
        );
        eprintln!("{tool} is not installed: skipped");
    }
    found
}

/// The unit as shipped, with `ExecStart` pointing at the binary under test (verify checks that
/// the executable exists), in a directory of its own.
fn unit_under_test() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let unit = read("systemd/ccflare.service").replace(
        "ExecStart=/usr/local/bin/ccflare-server",
        &format!("ExecStart={}", env!("CARGO_BIN_EXE_ccflare-server")),
    );
    let path = dir.path().join("ccflare.service");
    std::fs::write(&path, unit).unwrap();
    (dir, path)
}

/// The value of `Key=` in a unit (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// Seconds in a systemd time span such as `90s` or `90`.
fn seconds(span: &str) -> u64 {
    span.trim_end_matches('s')
        .parse()
        .expect("a span in seconds")
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let (_dir, unit) = unit_under_test();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("ccflare.service"),
        "verify complains about the unit: {stderr}"
    );
}

#[test]
fn the_systemd_unit_is_hardened_to_an_exposure_of_at_most_2() {
    if !have("systemd-analyze") {
        return;
    }
    let (_dir, unit) = unit_under_test();
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let exposure: f64 = stdout
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ccflare.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{stdout}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{stdout}");
}

#[test]
fn the_systemd_unit_waits_for_readiness_and_for_the_drain() {
    let unit = read("systemd/ccflare.service");
    assert_eq!(unit_value(&unit, "Type"), Some("notify"));
    assert_eq!(unit_value(&unit, "Restart"), Some("on-failure"));
    assert_eq!(unit_value(&unit, "DynamicUser"), Some("yes"));
    assert_eq!(unit_value(&unit, "StateDirectoryMode"), Some("0700"));
    assert_eq!(unit_value(&unit, "UMask"), Some("0077"));
    // The stop must outlast the drain (shutdown timeout), the records' flush (as long again,
    // at least 10 s) and the OAuth tokens' save (6 s), or systemd kills a clean shutdown.
    let drain: u64 = unit
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Environment=CCFLARE_SHUTDOWN_TIMEOUT=")
        })
        .expect("the unit sets the drain deadline")
        .parse()
        .unwrap();
    let stop = seconds(unit_value(&unit, "TimeoutStopSec").unwrap());
    assert!(
        stop > drain + drain.max(10) + 6,
        "TimeoutStopSec={stop}s, drain {drain}s"
    );
    let files: u64 = unit_value(&unit, "LimitNOFILE").unwrap().parse().unwrap();
    assert!(files >= 65_536);
    // Secrets as credentials, never in the environment.
    assert!(unit.contains("LoadCredential=admin_key:"));
    assert!(!unit.contains("CCFLARE_ADMIN_KEY="));
    assert!(!unit.contains("CLAUDE_API_KEYS="));
}

/// The shipped nginx site made runnable here: the upstream is the server at `backend` (a
/// `host:port`); with `plain` set, the TLS server listens on `listen` without TLS (the test
/// client speaks plain HTTP) and the redirecting one on `redirect`, else the certificate
/// paths point at `cert` and `key` and nothing else changes.
fn site(backend: &str, plain: Option<(u16, u16)>, cert: &Path, key: &Path) -> String {
    let shipped = read("nginx/ccflare.conf");
    assert!(shipped.contains("server 127.0.0.1:8080;"));
    let mut out = String::new();
    for line in shipped.lines() {
        let trimmed = line.trim();
        let line = match plain {
            Some((listen, redirect)) => {
                if trimmed.starts_with("ssl_") || trimmed.starts_with("listen [::]:") {
                    continue;
                } else if trimmed.starts_with("listen 443 ") {
                    format!("    listen 127.0.0.1:{listen};")
                } else if trimmed.starts_with("listen 80") {
                    format!("    listen 127.0.0.1:{redirect};")
                } else {
                    line.to_owned()
                }
            }
            None => line
                .replace(
                    "/etc/letsencrypt/live/ccflare.example.com/fullchain.pem",
                    &cert.display().to_string(),
                )
                .replace(
                    "/etc/letsencrypt/live/ccflare.example.com/privkey.pem",
                    &key.display().to_string(),
                ),
        };
        out.push_str(&line.replace("server 127.0.0.1:8080;", &format!("server {backend};")));
        out.push('\n');
    }
    out
}

/// nginx's main configuration around the site, every path in `dir`, in the foreground and
/// one process (so that the test's kill ends all of it).
fn nginx_conf(dir: &Path, site: &str) -> PathBuf {
    std::fs::write(dir.join("ccflare.conf"), site).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/client_body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {d}/ccflare.conf;\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// `nginx -t` (or a run) of the configuration at `conf`.
fn nginx(conf: &Path, dir: &Path) -> Command {
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(conf);
    command
}

/// A port nothing listens on now (nginx cannot report the one it was given by the system).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_nginx_site_passes_nginx_t_with_tls() {
    if !have("nginx") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=ccflare.example.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let conf = nginx_conf(dir.path(), &site("127.0.0.1:8080", None, &cert, &key));
    let output = nginx(&conf, dir.path()).arg("-t").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");
    let shipped = read("nginx/ccflare.conf");
    for directive in [
        "proxy_http_version 1.1;",
        "proxy_buffering off;",
        "proxy_request_buffering off;",
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "keepalive ",
    ] {
        assert!(shipped.contains(directive), "{directive}");
    }
}

mod through_nginx {
    use super::*;
    use ccflare_testkit::process::Server;
    use ccflare_testkit::{PROCESS_GUARD, SseReader, eventually, key, open, send};
    use common::{CLIENT_KEY, mock, proxy_command};

    const ADMIN: &str = "0123456789abcdef-nginx-admin";

    /// nginx running the shipped site in front of `backend`, until dropped.
    struct Nginx {
        child: tokio::process::Child,
        url: String,
        _dir: tempfile::TempDir,
    }

    impl Nginx {
        async fn start(backend: &str) -> Nginx {
            let dir = tempfile::tempdir().unwrap();
            let (listen, redirect) = (free_port(), free_port());
            let site = site(
                backend,
                Some((listen, redirect)),
                Path::new(""),
                Path::new(""),
            );
            let conf = nginx_conf(dir.path(), &site);
            let test = nginx(&conf, dir.path()).arg("-t").output().unwrap();
            assert!(
                test.status.success(),
                "{}",
                String::from_utf8_lossy(&test.stderr)
            );
            let mut command = tokio::process::Command::from(nginx(&conf, dir.path()));
            command
                .kill_on_drop(true)
                .stdin(std::process::Stdio::null());
            let child = command.spawn().expect("nginx starts");
            let url = format!("http://127.0.0.1:{listen}");
            let health = format!("{url}/health");
            eventually(PROCESS_GUARD, "nginx serving", || async {
                let ok = tokio::net::TcpStream::connect(("127.0.0.1", listen))
                    .await
                    .is_ok();
                ok.then_some(())
            })
            .await;
            assert_eq!(send(ccflare_testkit::get(&health)).await.status, 200);
            Nginx {
                child,
                url,
                _dir: dir,
            }
        }

        async fn stop(mut self) {
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(PROCESS_GUARD, self.child.wait()).await;
        }
    }

    #[tokio::test]
    async fn streams_large_bodies_and_the_admin_key_pass_through_nginx() {
        if !have("nginx") {
            return;
        }
        let upstream = mock().await;
        let dir = tempfile::tempdir().unwrap();
        let account = key("one");
        let mut command = proxy_command(dir.path(), &upstream, std::slice::from_ref(&account));
        command
            .env("CCFLARE_ADMIN_KEY", ADMIN)
            .env("CCFLARE_SHUTDOWN_TIMEOUT", "1");
        let server = Server::start(command).await;
        let backend = server.url.trim_start_matches("http://").to_owned();
        let nginx = Nginx::start(&backend).await;

        // A stream whose end the upstream never sends: its first events arrive through nginx
        // all the same, so nothing between the client and the upstream holds them back.
        upstream.push_fault(&account, ccflare_mock::Fault::Stall { after_events: 2 });
        let body = ccflare_testkit::Message::new("claude-haiku-4-5")
            .stream(true)
            .content("hi")
            .body();
        let request = ccflare_testkit::http::anthropic_post(
            &format!("{}/v1/messages", nginx.url),
            CLIENT_KEY,
            &[],
            body.clone(),
        );
        let response = open(request).await;
        assert_eq!(response.status(), 200);
        let mut events = SseReader::new(response.into_body());
        assert_eq!(events.next().await.name, "message_start");
        assert_eq!(events.next().await.name, "content_block_start");
        drop(events);

        // The server says so itself, for proxies other than nginx's own settings.
        let direct = ccflare_testkit::http::anthropic_post(
            &format!("{}/v1/messages", server.url),
            CLIENT_KEY,
            &[],
            body.clone(),
        );
        let direct = send(direct).await;
        assert_eq!(direct.header("x-accel-buffering"), "no");
        // A whole stream through nginx ends as the upstream ended it.
        let request = ccflare_testkit::http::anthropic_post(
            &format!("{}/v1/messages", nginx.url),
            CLIENT_KEY,
            &[("x-mock-chunk-delay-ms", "5")],
            body,
        );
        let whole = send(request).await;
        assert!(
            whole.text().contains("event: message_stop"),
            "{}",
            whole.text()
        );

        // A 20 MB request: nginx's default limit is 1 MB.
        let big = ccflare_testkit::Message::new("claude-haiku-4-5")
            .content(&"x".repeat(20 * 1024 * 1024))
            .body();
        let request = ccflare_testkit::http::anthropic_post(
            &format!("{}/v1/messages", nginx.url),
            CLIENT_KEY,
            &[],
            big.clone(),
        );
        let reply = send(request).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        // The mock counts a fourth of the body's length: all of it arrived.
        assert_eq!(reply.json()["usage"]["input_tokens"], big.len() / 4);

        // The management API still wants the admin key.
        let accounts = format!("{}/api/accounts", nginx.url);
        let refused = send(ccflare_testkit::get(&accounts)).await;
        assert_eq!(refused.status, 401);
        let bearer = format!("Bearer {ADMIN}");
        let request = ccflare_testkit::http::request(
            http::Method::GET,
            &accounts,
            &[("authorization", &bearer)],
            "",
        );
        assert_eq!(send(request).await.status, 200);

        nginx.stop().await;
        server.kill().await;
    }
}

/// The Dockerfile as instructions: continuation lines joined, comments dropped, each as
/// (instruction in capitals, the rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (instruction, rest) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((instruction.to_ascii_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// `NAME=value` pairs of `ENV` instructions (the `NAME=value` form, several per line).
fn env_pairs(rest: &str) -> Vec<(String, String)> {
    rest.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// A base image reference is pinned: a digest, or a tag with a version number (not `latest`).
fn pinned(image: &str) -> bool {
    if image.contains("@sha256:") {
        return true;
    }
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
    !tag.is_empty()
        && !tag.contains('/')
        && tag != "latest"
        && tag.contains(|c: char| c.is_ascii_digit())
}

/// The environment variables that hold secrets: every secret option's.
fn secret_variables() -> Vec<&'static str> {
    ccflare_core::config::OPTIONS
        .iter()
        .filter(|o| o.secret)
        .map(|o| o.env)
        .collect()
}

#[test]
fn the_dockerfile_runs_unprivileged_with_pinned_images_and_no_secrets() {
    let instructions = dockerfile();
    let froms: Vec<&str> = instructions
        .iter()
        .filter(|(i, _)| i == "FROM")
        .map(|(_, rest)| rest.split_whitespace().next().unwrap())
        .collect();
    assert!(froms.len() >= 2, "a multi-stage build: {froms:?}");
    for image in &froms {
        assert!(pinned(image), "{image} is not pinned");
    }
    // What the runtime stage (after the last FROM) says.
    let last = instructions.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let runtime = &instructions[last..];
    let one = |name: &str| -> String {
        let found: Vec<&String> = runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, rest)| rest)
            .collect();
        assert_eq!(found.len(), 1, "one {name} in the runtime stage");
        found[0].clone()
    };
    let user = one("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "USER {user}");
    assert_eq!(one("STOPSIGNAL"), "SIGTERM");
    assert!(one("VOLUME").contains("\"/data\""));
    let healthcheck = one("HEALTHCHECK");
    assert!(
        healthcheck.contains(r#"CMD ["/usr/local/bin/ccflare-server", "healthcheck"]"#),
        "{healthcheck}"
    );
    assert!(one("ENTRYPOINT").contains("/usr/local/bin/ccflare-server"));
    assert!(
        runtime
            .iter()
            .any(|(i, rest)| i == "COPY" && rest.contains("/out/ccflare-server")),
        "the runtime stage gets the binary"
    );
    // Secrets never in ENV or ARG (both are kept in the image's history); files only.
    let env: Vec<(String, String)> = instructions
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, rest)| env_pairs(rest))
        .collect();
    for (name, _) in &env {
        assert!(!secret_variables().contains(&name.as_str()), "ENV {name}");
    }
    assert!(
        env.iter()
            .any(|(n, v)| n == "DATABASE_URL" && v.starts_with("/data/"))
    );
    assert!(env.iter().any(|(n, v)| n == "HOST" && v == "0.0.0.0"));
    for (_, rest) in instructions.iter().filter(|(i, _)| i == "ARG") {
        let name = rest.split('=').next().unwrap();
        assert!(!secret_variables().contains(&name), "ARG {name}");
    }
    // The build is reproducible from the lock file.
    let builds: Vec<&String> = instructions
        .iter()
        .filter(|(i, rest)| i == "RUN" && rest.contains("cargo build"))
        .map(|(_, rest)| rest)
        .collect();
    assert!(
        builds.len() >= 2,
        "dependencies are built in their own layer first"
    );
    assert!(builds.iter().all(|b| b.contains("--locked")));

    let ignore = read("Dockerfile.dockerignore");
    for excluded in ["target/", ".git/", ".env*", "*.db"] {
        assert!(ignore.lines().any(|l| l.trim() == excluded), "{excluded}");
    }
}

#[tokio::test]
async fn the_image_environment_starts_the_server_and_its_healthcheck_passes() {
    // The runtime stage's ENV, with its paths moved into a temp dir and a free port: the
    // server starts from exactly that (the admin key from the secret file), and the
    // HEALTHCHECK's command says ready.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("run/secrets")).unwrap();
    let instructions = dockerfile();
    let last = instructions.iter().rposition(|(i, _)| i == "FROM").unwrap();
    let env: Vec<(String, String)> = instructions[last..]
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, rest)| env_pairs(rest))
        .map(|(n, v)| {
            let v = if v.starts_with('/') {
                format!("{}{v}", root.display())
            } else {
                v
            };
            (n, v)
        })
        .collect();
    let port = free_port().to_string();
    let with_env = |command: &mut tokio::process::Command| {
        for (name, value) in &env {
            command.env(name, value);
        }
        command.env("PORT", &port);
    };

    // Without the secret: one line that names the file.
    let mut missing =
        ccflare_testkit::process::isolated_command(env!("CARGO_BIN_EXE_ccflare-server"), root);
    with_env(&mut missing);
    let (code, _, err) = common::run_to_end(missing).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CCFLARE_ADMIN_KEY_FILE: cannot read "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    std::fs::write(
        root.join("run/secrets/admin_key"),
        "0123456789abcdef-docker-secret\n",
    )
    .unwrap();
    // The first client key, made with the image's ccflare-cli before the server's first start
    // (docs/deployment.md): /v1 on a network address requires one.
    common::with_a_client_key(&root.join("data/ccflare.db")).await;
    let mut command =
        ccflare_testkit::process::isolated_command(env!("CARGO_BIN_EXE_ccflare-server"), root);
    with_env(&mut command);
    let server = ccflare_testkit::process::Server::start(command).await;
    assert!(root.join("data/ccflare.db").exists());

    let healthcheck = instructions[last..]
        .iter()
        .find(|(i, _)| i == "HEALTHCHECK")
        .map(|(_, rest)| rest.clone())
        .unwrap();
    let args: Vec<String> = healthcheck
        .split_once("CMD [")
        .unwrap()
        .1
        .trim_end_matches(']')
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .collect();
    assert_eq!(args[0], "/usr/local/bin/ccflare-server");
    let mut check =
        ccflare_testkit::process::isolated_command(env!("CARGO_BIN_EXE_ccflare-server"), root);
    check.args(&args[1..]);
    with_env(&mut check);
    let (code, out, err) = common::run_to_end(check).await;
    assert_eq!(code, Some(0), "{out}{err}");
    server.terminate().await;
}

#[test]
fn the_compose_file_keeps_secrets_in_files_and_waits_for_the_drain() {
    let compose = read("docker-compose.yml");
    let lines: Vec<&str> = compose
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let text = lines.join("\n");
    for image in lines
        .iter()
        .filter_map(|l| l.trim().strip_prefix("image: "))
    {
        if !image.starts_with("ccflare:") {
            assert!(pinned(image), "{image} is not pinned");
        }
    }
    for variable in secret_variables() {
        assert!(
            !text.contains(&format!("{variable}:")),
            "{variable} in the environment"
        );
        assert!(
            !text.contains(&format!("{variable}=")),
            "{variable} in the environment"
        );
    }
    assert!(text.contains("CCFLARE_ADMIN_KEY_FILE: /run/secrets/admin_key"));
    assert!(text.contains("- ccflare-data:/data"));
    assert!(text.contains("restart: unless-stopped"));
    assert!(text.contains(r#"test: ["CMD", "/usr/local/bin/ccflare-server", "healthcheck"]"#));
    assert!(text.contains("profiles: [\"nginx\"]"));
    let grace = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("stop_grace_period: "))
        .expect("a stop grace period");
    // Drain (30 s), the records' flush (as long again) and the tokens' save (6 s).
    assert!(seconds(grace) > 30 + 30 + 6, "{grace}");
}

#[test]
fn the_pm2_ecosystem_waits_for_the_drain_and_holds_no_secret() {
    if !have("node") {
        return;
    }
    // Node itself reads the file as PM2 does (`require`).
    let output = Command::new("node")
        .arg("-e")
        .arg("process.stdout.write(JSON.stringify(require(process.argv[1])))")
        .arg(deploy_file("pm2/ecosystem.config.js"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let app = &config["apps"][0];
    assert_eq!(app["script"], "/usr/local/bin/ccflare-server");
    assert_eq!(app["interpreter"], "none");
    assert_eq!(app["exec_mode"], "fork");
    let drain: u64 = app["env"]["CCFLARE_SHUTDOWN_TIMEOUT"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let kill_timeout = app["kill_timeout"].as_u64().unwrap();
    assert!(
        kill_timeout > (drain + drain.max(10) + 6) * 1000,
        "kill_timeout {kill_timeout} ms"
    );
    for variable in secret_variables() {
        assert!(
            app["env"].get(variable).is_none(),
            "{variable} in the environment"
        );
    }
    assert_eq!(
        app["env"]["CCFLARE_ADMIN_KEY_FILE"],
        "/etc/ccflare/admin_key"
    );
}
