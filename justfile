# ccflare's everyday commands. `just` lists them; `just check` is what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments reach commands as "$@", so quoting survives.
set positional-arguments

# List the recipes.
default:
    @just --list

# Everything CI checks: formatting, lints as errors, all tests, and cargo-deny if installed.
check: fmt-check clippy test deny

# Fail if any file is not formatted (`cargo fmt --all` fixes it).
fmt-check:
    cargo fmt --all --check

# Lint every crate and target; warnings are errors, as in CI.
clippy:
    cargo clippy --workspace --all-targets -- -D warnings

# Run every test (nextest when installed, else cargo test); arguments go to the runner.
test *args:
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace "$@"
        # nextest does not run doctests; a plain `just test` runs them too (arguments meant
        # for nextest may not suit cargo test, so a filtered run skips them).
        if [ "$#" -eq 0 ]; then cargo test --workspace --doc; fi
    else
        cargo test --workspace "$@"
    fi

# Licenses, advisories, duplicate crates and sources (deny.toml); skipped if not installed.
deny:
    #!/usr/bin/env bash
    set -euo pipefail
    if cargo deny --version >/dev/null 2>&1; then
        cargo deny check
    else
        echo "cargo-deny is not installed; skipping (cargo install --locked cargo-deny)"
    fi

# Run the proxy (reads .env; see .env.example); arguments go to ccflare-server.
run *args:
    cargo run --release --bin ccflare-server -- "$@"

# The terminal UI (bins/ccflare, SPEC §2).
tui:
    @echo "the TUI (bins/ccflare) is not built yet" >&2
    @exit 1

# Benchmarks (ccflare-bench, SPEC §14): the standard set against the release server, about
# three minutes; writes target/bench/bench.md and bench.json. Arguments go to ccflare-bench
# (`just bench --scenario json --rate 2000`, `just bench --smoke`).
bench *args:
    cargo build --release --bin ccflare-server --bin ccflare-mock --bin ccflare-bench
    cargo run --quiet --release --bin ccflare-bench -- --out target/bench "$@"

# The same with `ccflare` and its terminal UI open on the Requests tab (in tmux) instead of
# ccflare-server: the overhead with the UI drawing every request, and its idle CPU. Writes
# target/bench-ui/bench.md and bench.json.
bench-ui *args:
    cargo build --release --bin ccflare --bin ccflare-server --bin ccflare-mock --bin ccflare-bench
    cargo run --quiet --release --bin ccflare-bench -- --out target/bench-ui --ui "$@"

# The soak (issue 9): an hour of mixed traffic against the release server; its memory and
# open files must stay flat and every request keep its row, else it exits non-zero. Writes
# target/soak/bench.md and bench.json (`just soak --soak-duration 600` for ten minutes).
soak *args:
    cargo build --release --bin ccflare-server --bin ccflare-bench
    cargo run --quiet --release --bin ccflare-bench -- --out target/soak --scenario soak "$@"

# Release binaries in target/dist-out (docs/deployment.md, "Release builds"): ccflare-server,
# ccflare-cli and ccflare, stripped, with LTO and the git revision baked in, and SHA256SUMS.
# The profile is `dist` (another, e.g. `release`, can be named to compare with the bench).
dist profile="dist":
    #!/usr/bin/env bash
    set -euo pipefail
    export GIT_REVISION="${GIT_REVISION:-$(git rev-parse --short=12 HEAD 2>/dev/null || true)}"
    cargo build --locked --profile "{{profile}}" --bin ccflare-server --bin ccflare-cli --bin ccflare
    out=target/{{profile}}-out
    rm -rf "$out" && mkdir -p "$out"
    for binary in ccflare-server ccflare-cli ccflare; do
        cp "target/{{profile}}/$binary" "$out/"
    done
    (cd "$out" && sha256sum ccflare-server ccflare-cli ccflare > SHA256SUMS && cat SHA256SUMS)
    ls -l "$out"
    "$out/ccflare-server" --version

# Run the mock Anthropic upstream, for trying ccflare without real keys.
mock *args:
    cargo run --bin ccflare-mock -- "$@"
