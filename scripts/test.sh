#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real OpenSSH servers on light
# lab hosts. Works on a fresh machine: installs what the lab needs first. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/lab/lab.sh deps
# Full-host lab images (cached in Docker by recipe hash: seconds when warm, minutes cold).
t0=$SECONDS
bash tests/lab/full/image.sh build
bash tests/lab/full/mirror.sh image
bash tests/lab/full/stack.sh build
bash tests/lab/full/stack.sh gitserver-image
echo "full-lab images ready in $((SECONDS - t0)) s"
cargo fmt --all -- --check
cargo build --locked --all-targets
# Labs of different tests run side by side; each test brings up and removes its own.
cargo test --locked -- --test-threads="${CLAW_TEST_THREADS:-4}"
