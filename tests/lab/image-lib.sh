# Shared by the lab's locally built images that are `docker import`ed from an mmdebstrap root
# (tests/lab/bare/image.sh, tests/lab/portable/image.sh); sourced, not run. The script sets
# SELF (its own path), NAME (for messages), REPO_NAME, LOCK and defines `build TAG`, then calls
# `lab_image_main "$@"`. This gives it: die, say, usage (the script's header), tag (the sha256 of
# the script and of this library: a change to either builds a new image, an unchanged pair reuses
# the cached one at once), have_image, need_mmdebstrap, and the commands build/image, tag, prune.

die() { echo "$NAME: $*" >&2; exit 1; }
say() { echo "$NAME: $*" >&2; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit 2; }

tag() {
    local h
    h=$(cat "$SELF" "${BASH_SOURCE[0]}" | sha256sum)
    echo "$REPO_NAME:${h:0:12}"
}

have_image() { docker image inspect --format '{{.Id}}' "$1" >/dev/null 2>&1; }

# mmdebstrap, installed with apt-get when missing.
need_mmdebstrap() {
    command -v mmdebstrap >/dev/null && return
    say "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2 ||
        { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap >&2; } ||
        die "apt-get install mmdebstrap failed"
}

# Prints the tag, building the image first when Docker does not have it (one build at a time:
# a parallel caller then finds the image).
image() {
    local t
    t=$(tag)
    if ! have_image "$t"; then
        [ "$(id -u)" = 0 ] || die "must run as root to build the image"
        mkdir -p "$(dirname "$LOCK")"
        exec 9>"$LOCK"
        flock 9
        have_image "$t" || build "$t"
        exec 9>&-
    fi
    echo "$t"
}

prune() { # images still used by a container are kept
    local t i
    t=$(tag)
    for i in $(docker images --format '{{.Repository}}:{{.Tag}}' "$REPO_NAME" | grep -vxF "$t" || true); do
        if docker rmi "$i" >/dev/null 2>&1; then say "removed $i"; else say "kept $i (in use)"; fi
    done
}

lab_image_main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case $cmd in
        build|image) [ $# -eq 0 ] || usage; image ;;
        tag) [ $# -eq 0 ] || usage; tag ;;
        prune) [ $# -eq 0 ] || usage; prune ;;
        *) usage ;;
    esac
}
