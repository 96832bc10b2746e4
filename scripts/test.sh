#!/usr/bin/env bash
# The project's test command (README): prepares the two real clients the tests drive besides
# cargo's own — the official `anthropic` Python SDK (a virtualenv in target/python) and Claude
# Code (npm, in target/node) — so nothing global changes, then runs every test of the
# workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import anthropic.resources.beta.files' 2>/dev/null; then
    echo "scripts/test.sh: installing the anthropic Python SDK into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'anthropic>=0.52'
fi
export PYTHON="$PWD/$venv/bin/python"

# Claude Code, pinned so a new release cannot change what the test sees without a commit.
claude_version=2.1.197
node_dir=target/node
if ! "$node_dir/node_modules/.bin/claude" --version 2>/dev/null | grep -q "^$claude_version "; then
    echo "scripts/test.sh: installing Claude Code $claude_version into $node_dir" >&2
    mkdir -p "$node_dir"
    npm install --silent --no-audit --no-fund --prefix "$node_dir" "@anthropic-ai/claude-code@$claude_version" >&2
fi
export CLAUDE_CODE_BIN="$PWD/$node_dir/node_modules/.bin/claude"

exec cargo test --workspace --locked "$@"
