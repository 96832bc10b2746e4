//! The workspace's dependency rules (STYLE.md, "Our workspace"), checked against
//! `cargo metadata`: dependencies point down (bins → proxy/analytics → pool/storage → core),
//! and a few packages are reserved for the crates whose job they are (sqlx for storage, hyper
//! for ccflare-http and the proxy, clap and friends for binaries), and test support is only
//! ever a dev-dependency. Adding a crate is one row in `CRATES`; reserving a package is one
//! row in `RESERVED`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Library,
    Binary,
    /// A library of test code (ccflare-testkit): only ever a dev-dependency, and, being test
    /// code, free to use any package, as dev-dependencies are.
    TestSupport,
}

/// One workspace crate and the workspace crates it may depend on.
struct CrateRule {
    name: &'static str,
    kind: Kind,
    /// Workspace crates allowed as normal and build dependencies (and so also in tests).
    uses: &'static [&'static str],
    /// Workspace crates allowed only as dev-dependencies (tests, examples, benches).
    dev_uses: &'static [&'static str],
}

/// The crates a row names: workspace crates, as `&[CORE, POOL]`.
type Names = &'static [&'static str];

const fn lib(name: &'static str, uses: Names, dev_uses: Names) -> CrateRule {
    CrateRule {
        name,
        kind: Kind::Library,
        uses,
        dev_uses,
    }
}

const fn bin(name: &'static str, uses: Names, dev_uses: Names) -> CrateRule {
    CrateRule {
        kind: Kind::Binary,
        ..lib(name, uses, dev_uses)
    }
}

const fn test_support(name: &'static str, uses: Names) -> CrateRule {
    CrateRule {
        kind: Kind::TestSupport,
        ..lib(name, uses, &[])
    }
}

const CORE: &str = "ccflare-core";
const POOL: &str = "ccflare-pool";
const STORAGE: &str = "ccflare-storage";
const PROXY: &str = "ccflare-proxy";
const ANALYTICS: &str = "ccflare-analytics";
const API: &str = "ccflare-api";
const MOCK: &str = "ccflare-mock";
const BENCH: &str = "ccflare-bench";
const CONFIG: &str = "ccflare-config";
const OAUTH: &str = "ccflare-oauth";
const HTTP: &str = "ccflare-http";
const TESTKIT: &str = "ccflare-testkit";
const TUI: &str = "ccflare-tui";
const APP: &str = "ccflare-app";
const DASHBOARD: &str = "ccflare-dashboard";

/// Every workspace crate, one row each. A crate missing here fails the test, so a new crate
/// has to state its place in the layering.
const CRATES: &[CrateRule] = &[
    lib(CORE, &[], &[]),
    lib(POOL, &[CORE], &[]),
    // Its fault tests use the testkit's real disk faults (chattr) and bounded waits.
    lib(STORAGE, &[CORE], &[TESTKIT]),
    lib(ANALYTICS, &[CORE, STORAGE], &[]),
    // The one HTTP client (connector, pool, small exchanges) under the proxy, OAuth and the
    // CLI: it needs no ccflare crate, so any of them may use it.
    lib(HTTP, &[], &[]),
    // OAuth: the login flow and the token endpoint; the proxy refreshes tokens through it.
    lib(OAUTH, &[CORE, HTTP], &[MOCK]),
    lib(PROXY, &[CORE, HTTP, POOL, STORAGE, OAUTH], &[MOCK, TESTKIT]),
    // The mock upstream stands alone so that it cannot share a bug with what it tests. (Its
    // tests talk to it through the testkit's plain HTTP client.)
    lib(MOCK, &[], &[TESTKIT]),
    // The web dashboard's files and how they are served: pure, it knows no other crate.
    lib(DASHBOARD, &[], &[]),
    // The management API sits above the proxy (which only knows it as a trait object), and
    // serves the dashboard's files.
    lib(
        API,
        &[CORE, POOL, STORAGE, PROXY, ANALYTICS, OAUTH, DASHBOARD],
        &[MOCK, TESTKIT],
    ),
    // Reading .env, the environment and the config file, shared by the binaries.
    lib(CONFIG, &[CORE], &[]),
    // The terminal UI reads and changes the server through its own `Source` trait, which the
    // binary implements over the proxy and the API: it never names them itself.
    lib(
        TUI,
        &[CORE, POOL, STORAGE, ANALYTICS, CONFIG, OAUTH],
        &[TESTKIT],
    ),
    // The server's start-up and shutdown, which both server binaries call: the command line,
    // logging, storage, the proxy and the API put together. Never the terminal UI: the headless
    // server does not carry it.
    lib(
        APP,
        &[CORE, CONFIG, HTTP, POOL, STORAGE, PROXY, API, OAUTH],
        &[MOCK, TESTKIT],
    ),
    // Thin: the server is ccflare-app's. Its tests read the database and drive the mock.
    bin("ccflare-server", &[APP], &[CORE, STORAGE, MOCK, TESTKIT]),
    // The terminal UI over the server in-process: ccflare-app starts the server, and the
    // binary's `Source` reads it through the proxy's state, storage, analytics and the API's
    // operations.
    bin(
        "ccflare",
        &[APP, TUI, CORE, POOL, STORAGE, PROXY, ANALYTICS, API, OAUTH],
        &[MOCK, TESTKIT],
    ),
    // The CLI talks to the upstream and a running server through ccflare-http, never
    // through the server's engine.
    bin(
        "ccflare-cli",
        &[CORE, CONFIG, POOL, STORAGE, ANALYTICS, OAUTH, HTTP],
        &[MOCK, TESTKIT],
    ),
    // The benchmark drives the real server binary and the mock, and counts rows in storage.
    // Its quota scenario's test also runs the same seeded traffic through the pool's own code
    // with a simulated clock (tests only: the binary measures the real server).
    bin(BENCH, &[CORE, STORAGE, MOCK], &[POOL, TESTKIT]),
    // What the integration tests share: the HTTP client, SSE reading, the server process and
    // the in-process proxy's fixture. Tests only: no crate ships with it.
    test_support(TESTKIT, &[CORE, POOL, STORAGE, PROXY, OAUTH, MOCK]),
];

/// Which workspace crates may name a reserved package as a normal or build dependency.
/// Dev-dependencies are free: a test may use anything.
enum Allowed {
    Only(&'static [&'static str]),
    Binaries,
    /// Binaries and these libraries.
    BinariesAnd(&'static [&'static str]),
    AllBut(&'static [&'static str]),
}

struct Reserved {
    package: &'static str,
    allowed: Allowed,
    why: &'static str,
}

const fn reserve(package: &'static str, allowed: Allowed, why: &'static str) -> Reserved {
    Reserved {
        package,
        allowed,
        why,
    }
}

// The client side is ccflare-http's; the proxy serves with hyper-util (and the mock too).
const HYPER_USERS: Allowed = Allowed::Only(&[HTTP, PROXY, MOCK]);
const BINARY_ONLY: &str = "libraries return typed errors and leave the process (argv, terminal, \
                           logging setup) to the binaries";

const RESERVED: &[Reserved] = &[
    reserve(
        "sqlx",
        Allowed::Only(&[STORAGE, ANALYTICS]),
        "SQL lives in storage (analytics reads through it)",
    ),
    reserve(
        "hyper",
        Allowed::Only(&[HTTP, PROXY, MOCK, API]),
        "HTTP lives in ccflare-http (clients), the proxy and the management API it serves (and \
         the mock upstream)",
    ),
    reserve(
        "hyper-util",
        HYPER_USERS,
        "HTTP lives in ccflare-http (clients) and the proxy (and the mock upstream)",
    ),
    reserve(
        "hyper-rustls",
        Allowed::Only(&[HTTP]),
        "TLS clients are made in one place, ccflare-http, so every connection is set up alike",
    ),
    reserve(
        "dotenvy",
        Allowed::Only(&[CONFIG]),
        "`.env` is read in one place, ccflare-config, so every binary reads it the same way",
    ),
    // ccflare-app is the binaries' shared start-up, command line included.
    reserve("clap", Allowed::BinariesAnd(&[APP]), BINARY_ONLY),
    reserve("anyhow", Allowed::Binaries, BINARY_ONLY),
    // The API's log feed is a tracing-subscriber layer; ccflare-app installs the subscriber
    // for both server binaries.
    reserve(
        "tracing-subscriber",
        Allowed::BinariesAnd(&[API, APP]),
        BINARY_ONLY,
    ),
    reserve(
        "ratatui",
        Allowed::BinariesAnd(&[TUI]),
        "the terminal is the TUI's (and the binaries')",
    ),
    reserve(
        "crossterm",
        Allowed::BinariesAnd(&[TUI]),
        "the terminal is the TUI's (and the binaries')",
    ),
    reserve(
        "tokio",
        Allowed::AllBut(&[CORE, POOL]),
        "core and the pool are pure: no IO, no runtime, the clock passed in",
    ),
];

impl Allowed {
    fn permits(&self, krate: &CrateRule) -> bool {
        match self {
            Allowed::Only(names) => names.contains(&krate.name),
            Allowed::Binaries => krate.kind == Kind::Binary,
            Allowed::BinariesAnd(names) => {
                krate.kind == Kind::Binary || names.contains(&krate.name)
            }
            Allowed::AllBut(names) => !names.contains(&krate.name),
        }
    }
}

/// One dependency edge read from the metadata.
struct Dependency<'a> {
    name: &'a str,
    /// `None` for normal dependencies, else `"dev"` or `"build"`.
    kind: Option<&'a str>,
}

impl Dependency<'_> {
    fn kind_name(&self) -> &str {
        self.kind.unwrap_or("normal")
    }

    fn is_dev(&self) -> bool {
        self.kind == Some("dev")
    }
}

/// Every broken rule in `metadata` (the JSON of `cargo metadata --no-deps`), one line each.
fn violations(metadata: &Value) -> Vec<String> {
    let packages = metadata["packages"]
        .as_array()
        .expect("cargo metadata has a `packages` array");
    let members: BTreeSet<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().expect("every package has a name"))
        .collect();
    let rule = |name: &str| CRATES.iter().find(|r| r.name == name);
    let mut found = Vec::new();

    for name in &members {
        if rule(name).is_none() {
            found.push(format!(
                "{name} is a workspace crate without a row in CRATES (tests/layering.rs): \
                 add one saying which workspace crates it may depend on"
            ));
        }
    }
    for row in CRATES {
        if !members.contains(row.name) {
            found.push(format!(
                "CRATES has a row for {}, which is not a workspace crate: remove the row",
                row.name
            ));
        }
    }

    for package in packages {
        let name = package["name"].as_str().expect("every package has a name");
        let Some(krate) = rule(name) else { continue };
        let dependencies = package["dependencies"]
            .as_array()
            .expect("every package has a `dependencies` array");
        for dependency in dependencies {
            let dependency = Dependency {
                name: dependency["name"]
                    .as_str()
                    .expect("every dependency has a name"),
                kind: dependency["kind"].as_str(),
            };
            if members.contains(dependency.name) {
                check_workspace_edge(krate, &dependency, &mut found);
            } else if !dependency.is_dev() {
                check_reserved(krate, &dependency, &mut found);
            }
        }
    }
    found
}

fn check_workspace_edge(krate: &CrateRule, dependency: &Dependency<'_>, found: &mut Vec<String>) {
    let target = CRATES.iter().find(|r| r.name == dependency.name);
    if target.is_some_and(|t| t.kind == Kind::TestSupport) && !dependency.is_dev() {
        found.push(format!(
            "{} depends on {} ({} dependency): test support is only ever a dev-dependency",
            krate.name,
            dependency.name,
            dependency.kind_name()
        ));
        return;
    }
    if krate.kind == Kind::Library && target.is_some_and(|t| t.kind == Kind::Binary) {
        found.push(format!(
            "{} (a library) depends on {} (a binary): libraries never depend on binaries",
            krate.name, dependency.name
        ));
        return;
    }
    let allowed = krate.uses.contains(&dependency.name)
        || (dependency.is_dev() && krate.dev_uses.contains(&dependency.name));
    if !allowed {
        let mut may = krate.uses.join(", ");
        if may.is_empty() {
            may = "no workspace crate".to_owned();
        }
        if !krate.dev_uses.is_empty() {
            may.push_str(&format!(
                " (and, in tests only, {})",
                krate.dev_uses.join(", ")
            ));
        }
        found.push(format!(
            "{} depends on {} ({} dependency), against the layering \
             bins → proxy/analytics → pool/storage → core; {} may use: {}",
            krate.name,
            dependency.name,
            dependency.kind_name(),
            krate.name,
            may
        ));
    }
}

/// A crate allowed one reserved package outside its rule, and why. Kept to a named list rather
/// than widening a rule, so nothing else gains the package by accident.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    // ccflare-bench is an HTTP load generator: it must speak HTTP itself (a hyper-util client
    // sized for its concurrency), not through the proxy crate it measures. No TLS: loopback.
    (BENCH, "hyper", "the benchmark's load generator"),
    (BENCH, "hyper-util", "the benchmark's load generator"),
];

fn check_reserved(krate: &CrateRule, dependency: &Dependency<'_>, found: &mut Vec<String>) {
    if krate.kind == Kind::TestSupport {
        // Test code, like a dev-dependency: the reservations are about what ships.
        return;
    }
    let excepted = EXCEPTIONS
        .iter()
        .any(|(name, package, _why)| *name == krate.name && *package == dependency.name);
    if excepted {
        return;
    }
    for reserved in RESERVED {
        if reserved.package == dependency.name && !reserved.allowed.permits(krate) {
            found.push(format!(
                "{} depends on {} ({} dependency), which it may not: {}",
                krate.name,
                dependency.name,
                dependency.kind_name(),
                reserved.why
            ));
        }
    }
}

fn workspace_metadata() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(&root)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed in {}: {}",
        root.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn workspace_dependencies_point_down() {
    let found = violations(&workspace_metadata());
    assert!(
        found.is_empty(),
        "the workspace breaks its dependency rules (STYLE.md, \"Our workspace\"; the table is in \
         bins/ccflare-server/tests/layering.rs):\n  - {}",
        found.join("\n  - ")
    );
}

/// A hand-made workspace in the shape `cargo metadata` prints, with the rows of `CRATES`
/// and the given extra edges, so the checker is seen to catch each kind of mistake.
fn metadata_with(extra: &[(&str, &str, Option<&str>)]) -> Value {
    let packages: Vec<Value> = CRATES
        .iter()
        .map(|row| {
            let mut dependencies: Vec<Value> = row
                .uses
                .iter()
                .map(|d| serde_json::json!({ "name": d, "kind": null }))
                .chain(
                    row.dev_uses
                        .iter()
                        .map(|d| serde_json::json!({ "name": d, "kind": "dev" })),
                )
                .collect();
            for (from, to, kind) in extra {
                if *from == row.name {
                    dependencies.push(serde_json::json!({ "name": to, "kind": kind }));
                }
            }
            serde_json::json!({ "name": row.name, "dependencies": dependencies })
        })
        .collect();
    serde_json::json!({ "packages": packages })
}

#[test]
fn the_checker_reports_each_kind_of_wrong_edge() {
    assert_eq!(violations(&metadata_with(&[])), Vec::<String>::new());

    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        (
            CORE,
            POOL,
            None,
            "ccflare-core depends on ccflare-pool (normal dependency)",
        ),
        (
            POOL,
            STORAGE,
            Some("build"),
            "ccflare-pool depends on ccflare-storage (build",
        ),
        (
            PROXY,
            MOCK,
            None,
            "ccflare-proxy depends on ccflare-mock (normal dependency)",
        ),
        (
            STORAGE,
            "ccflare-server",
            Some("dev"),
            "(a library) depends on ccflare-server",
        ),
        (POOL, "sqlx", None, "ccflare-pool depends on sqlx"),
        (STORAGE, "hyper", None, "ccflare-storage depends on hyper"),
        (PROXY, "anyhow", None, "ccflare-proxy depends on anyhow"),
        (
            PROXY,
            API,
            None,
            "ccflare-proxy depends on ccflare-api (normal dependency)",
        ),
        (
            HTTP,
            CORE,
            None,
            "ccflare-http depends on ccflare-core (normal dependency)",
        ),
        (
            "ccflare-cli",
            PROXY,
            None,
            "ccflare-cli depends on ccflare-proxy (normal dependency)",
        ),
        (
            OAUTH,
            "hyper-rustls",
            None,
            "ccflare-oauth depends on hyper-rustls (normal dependency), which it may not: TLS",
        ),
        (
            STORAGE,
            "tracing-subscriber",
            None,
            "ccflare-storage depends on tracing-subscriber",
        ),
        (CORE, "tokio", None, "ccflare-core depends on tokio"),
        (
            TUI,
            PROXY,
            None,
            "ccflare-tui depends on ccflare-proxy (normal dependency)",
        ),
        (TUI, API, None, "ccflare-tui depends on ccflare-api"),
        (TUI, APP, None, "ccflare-tui depends on ccflare-app"),
        (APP, TUI, None, "ccflare-app depends on ccflare-tui"),
        (APP, "ratatui", None, "ccflare-app depends on ratatui"),
        (APP, "anyhow", None, "ccflare-app depends on anyhow"),
        (POOL, "clap", None, "ccflare-pool depends on clap"),
        (
            STORAGE,
            "ratatui",
            None,
            "ccflare-storage depends on ratatui",
        ),
        (
            PROXY,
            TESTKIT,
            None,
            "ccflare-proxy depends on ccflare-testkit (normal dependency): test support is only \
             ever a dev-dependency",
        ),
        (
            STORAGE,
            TESTKIT,
            Some("build"),
            "ccflare-storage depends on ccflare-testkit (build dependency): test support",
        ),
        (
            "ccflare-server",
            TESTKIT,
            None,
            "ccflare-server depends on ccflare-testkit (normal dependency): test support",
        ),
    ];
    for (from, to, kind, expected) in cases {
        let found = violations(&metadata_with(&[(from, to, *kind)]));
        assert!(
            found.len() == 1 && found[0].contains(expected),
            "{from} → {to}: expected one violation containing {expected:?}, got {found:#?}"
        );
    }

    // Tests may use anything outside the workspace.
    assert!(violations(&metadata_with(&[(CORE, "tokio", Some("dev"))])).is_empty());
    // Test support is test code: it may use what tests use.
    assert!(violations(&metadata_with(&[(TESTKIT, "hyper-util", None)])).is_empty());
    // The bench's exception covers hyper, not SQL.
    assert!(violations(&metadata_with(&[(BENCH, "hyper-util", None)])).is_empty());
    assert_eq!(
        violations(&metadata_with(&[(BENCH, "sqlx", None)])).len(),
        1
    );
}
