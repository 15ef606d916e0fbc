#!/usr/bin/env bash
# The project's test command (README, CI): installs what the integration
# tests need, then checks formatting and lints, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/check-helm.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked -- --test-threads "${SWITCHBOARD_TEST_THREADS:-4}"
