#!/usr/bin/env bash
# Randomized convergence on a light lab host, at scale: random desired states (directories,
# files, templates, modes, owners, nested paths, absent paths) and random drift by hand, each
# apply checked against the whole tree on the host, and a second apply that must change nothing.
#
#   bash scripts/converge-fuzz.sh SEED TREES [ROUNDS]     e.g. scripts/converge-fuzz.sh 7 2000
#   bash scripts/converge-fuzz.sh SEED ONLY=INDEX [ROUNDS] replays one tree of a failed run
#
# SEED: decimal or 0x-hex; TREES: how many random trees (about 14 managed paths each over the
# rounds; 80 per apply); ROUNDS: desired-state changes + drift per tree (default 3). A failure
# prints the seed, the round, each differing path (wanted, got, what was there before, its step
# and the drift it got) and the command that replays just that tree. The CI test runs 60 trees
# with seed 0x5eed (tests/converge_fuzz.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
export CLAW_CONVERGE_SEED=$1
case $2 in
    ONLY=*) export CLAW_CONVERGE_ONLY=${2#ONLY=} ;;
    *) export CLAW_CONVERGE_TREES=$2 ;;
esac
export CLAW_CONVERGE_ROUNDS=${3:-3}
bash tests/lab/lab.sh deps >/dev/null
exec cargo test --test integration converge_fuzz:: -- --nocapture --test-threads=1
