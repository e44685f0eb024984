#!/usr/bin/env bash
# The benchmark of issue 7 (see bench/run.py): builds the release binary, installs what the lab
# needs, then measures plan / first apply / no-op apply of playbooks/claw-ai.toml on 1, 20 and
# 200 light lab hosts with 0 and 25 ms one-way latency against N parallel `ssh host true`.
# Writes bench/results/latest.md and latest.json. Options: --sizes "1 20", --delays "0", --runs N.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/lab/lab.sh deps
cargo build --release --locked
exec python3 bench/run.py "$@"
