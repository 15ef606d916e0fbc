#!/usr/bin/env bash
# Runs the chaos test (tests/chaos/) alone, outside CI.
#
#   scripts/chaos.sh                  # as in CI: 20 s of faults
#   scripts/chaos.sh --soak [SECS]    # a release build, SECS (600) of faults
#   scripts/chaos.sh --seed N         # replay the schedule of a printed seed
#
# Both options combine. The test prints `CHAOS SEED=<n>` at the start and
# with any failure; everything it starts stops with it.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=()
while [ $# -gt 0 ]; do
    case "$1" in
        --soak)
            profile=(--release)
            if [[ "${2:-}" =~ ^[0-9]+$ ]]; then
                export SWITCHBOARD_CHAOS_SECS="$2"; shift
            else
                export SWITCHBOARD_CHAOS_SECS=600
            fi ;;
        --seed)
            [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "chaos: --seed needs a number" >&2; exit 2; }
            export SWITCHBOARD_CHAOS_SEED="$2"; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "chaos: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
exec cargo test "${profile[@]}" --locked --test chaos -- --nocapture
