#!/usr/bin/env bash
# Cuts mid-apply, the long loop: N applies (default 100) on a light lab host, each cut at a
# random moment chosen from SEED (default: from the clock) by killing the host's sshd and its
# processes or by dropping its link; after each cut every managed file must be wholly old or
# wholly new, and the next apply must converge (tests/cuts.rs; CI runs 20 of them).
#   bash scripts/cuts.sh [N [SEED]]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
SEED=${2:-$(date +%s)}
[[ $N =~ ^[0-9]+$ && $SEED =~ ^[0-9]+$ ]] || { echo "usage: scripts/cuts.sh [N [SEED]]" >&2; exit 2; }
echo "cuts: $N cuts, seed $SEED"
CLAW_CUTS=$N CLAW_CUTS_SEED=$SEED exec cargo test --test integration \
    cuts::applies_cut_at_random_moments -- --nocapture
