#!/usr/bin/env bash
# The project's test command (README, CI): installs what the integration
# tests need, then checks formatting and lints, then runs every test, for
# the whole workspace (the servers and tools/load).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/check-helm.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked -- --test-threads "${SWITCHBOARD_TEST_THREADS:-4}"
