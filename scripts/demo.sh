#!/usr/bin/env bash
# The main job against the local test lab: builds, starts N light hosts (default 3), shows the
# plan of the demo playbook, applies it, and applies again to show that nothing changes; then the
# same for the claw-ai playbook (its server side; Docker steps skipped on light hosts).
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

# The claw-ai server side (playbooks/claw-ai.toml) on the same hosts: packages, firewall, directories,
# the lab's TLS certificate, generated secrets, nginx.conf / docker-compose.prod.yml / .env / backup.sh,
# log rotation. Light lab hosts have no systemd, so the Docker steps are skipped by their `when`.
# The API keys come from your environment (or ../secrets.env); placeholders are used when unset.
export ZHIPUAI_API_KEY="${ZHIPUAI_API_KEY:-demo-placeholder-zhipuai}"
export PINECONE_API_KEY="${PINECONE_API_KEY:-demo-placeholder-pinecone}"
pb=playbooks/claw-ai.toml
echo "== claw-provision plan $inv --playbook $pb"
"$bin" plan "$inv" --playbook "$pb"
echo "== claw-provision apply $inv --playbook $pb --yes"
"$bin" apply "$inv" --playbook "$pb" --yes
echo "== claw-provision apply $inv --playbook $pb --yes   (again: nothing to change)"
"$bin" apply "$inv" --playbook "$pb" --yes
