#!/usr/bin/env bash
# The project's test command (README): prepares the one thing the tests need beyond cargo — the
# official `anthropic` Python SDK, in a virtualenv under target/ so nothing global changes —
# then runs every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import anthropic' 2>/dev/null; then
    echo "scripts/test.sh: installing the anthropic Python SDK into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'anthropic>=0.40'
fi
export PYTHON="$PWD/$venv/bin/python"

exec cargo test --workspace --locked "$@"
