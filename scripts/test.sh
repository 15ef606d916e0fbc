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
# The cross-server test files once more with the servers in mesh mode (no
# relay: tests/support/cluster.rs reads SWITCHBOARD_TEST_MODE), so both
# ways of linking servers pass the same tests. Files that test the relay
# itself stay relay-only; tests/mesh.rs covers mesh mode's own behaviour.
SWITCHBOARD_TEST_MODE=mesh cargo test --locked \
  --test chat --test acks --test telnet --test drain --test limits \
  --test logins_race --test redis_restart --test mailbox \
  -- --test-threads "${SWITCHBOARD_TEST_THREADS:-4}"
SWITCHBOARD_TEST_MODE=mesh cargo test --locked --test failover --test resilience \
  -- --test-threads "${SWITCHBOARD_TEST_THREADS:-4}" \
  killed_server_is_purged sigterm_drains restart_under_the_same_id kill9_of_a_server_mid_run
