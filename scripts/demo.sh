#!/usr/bin/env bash
# The main job against the local test lab: builds, starts N light hosts (default 3), shows the
# plan of the demo playbook, applies it, and applies again to show that nothing changes.
# Leaves the lab running (inventory: target/lab/inventory.toml); `tests/lab/lab.sh down` removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"
bash tests/lab/lab.sh deps
cargo build --locked --release
bin=target/release/claw-provision
bash tests/lab/lab.sh up "$n"
inv=target/lab/inventory.toml
echo "== claw-provision plan $inv"
"$bin" plan "$inv"
echo "== claw-provision apply $inv --yes"
"$bin" apply "$inv" --yes
echo "== claw-provision apply $inv --yes   (again: nothing to change)"
"$bin" apply "$inv" --yes
