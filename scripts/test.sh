#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real OpenSSH servers on light
# lab hosts. Works on a fresh machine: installs what the lab needs first. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/lab/lab.sh deps
cargo fmt --all -- --check
cargo build --locked --all-targets
# Labs of different tests run side by side; each test brings up and removes its own.
cargo test --locked -- --test-threads="${CLAW_TEST_THREADS:-4}"
