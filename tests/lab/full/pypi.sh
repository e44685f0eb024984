#!/usr/bin/env bash
# The lab's PyPI mirror (issue 17): the wheels the lab backend (tests/lab/full/backend/requirements.txt) needs,
# downloaded ONCE on this machine with pip and laid out as a PEP 503 "simple" index of static files, which the
# lab's mirror container serves read-only at http://MIRROR/pypi/simple/ (tests/lab/lab.sh mounts the
# directory; lab.json "pypi") and `stack.sh build backend` serves to its own image build.
#
#   pypi.sh build      download (if this recipe's directory is missing) and print the directory holding
#                      simple/ (index.html, NAME/index.html) and wheels/ (the .whl files)
#   pypi.sh dir        print that directory without downloading anything
#
# Directory: target/lab-pypi/<hash12>, the hash covering this script, requirements.txt and EXTRA below, so a
# changed pin downloads again; older directories are removed after a successful build. Wheels only
# (--only-binary=:all:) for CPython 3.11 on manylinux2014 x86_64: nothing is compiled, here or in an image.
# Needs python3 with pip on this machine and access to PyPI (PIP_INDEX_URL etc. are honoured) once.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../../.." && pwd -P)
SELF=$HERE/pypi.sh
REQ=$HERE/backend/requirements.txt
OUT=$REPO/target/lab-pypi
# What the lab's python stand-in (Debian's 3.11.2, see stack.sh `python`) needs beyond requirements.txt:
# redis requires async-timeout when python_full_version < "3.11.3" (the official 3.11.15 image does not).
EXTRA=(async-timeout==5.0.1)

die() { echo "pypi.sh: $*" >&2; exit 1; }
say() { echo "pypi.sh: $*" >&2; }

dir() {
    local h
    h=$( { cat "$SELF" "$REQ"; printf '%s\n' "${EXTRA[@]}"; } | sha256sum)
    echo "$OUT/${h:0:12}"
}

index() { # DIR: simple/index.html and simple/NAME/index.html for every wheel in DIR/wheels (PEP 503)
    python3 - "$1" <<'PY'
import hashlib, html, os, re, sys
root = sys.argv[1]
wheels = sorted(os.listdir(os.path.join(root, "wheels")))
projects = {}
for w in wheels:
    if w.endswith(".whl"):
        name = re.sub(r"[-_.]+", "-", w.split("-")[0]).lower()   # PEP 503 normalized name
        projects.setdefault(name, []).append(w)
simple = os.path.join(root, "simple")
os.makedirs(simple, exist_ok=True)
page = lambda title, body: f"<!DOCTYPE html>\n<html><head><title>{title}</title></head><body>\n{body}</body></html>\n"
with open(os.path.join(simple, "index.html"), "w") as f:
    f.write(page("claw-lab PyPI mirror", "".join(f'<a href="{n}/">{n}</a><br>\n' for n in sorted(projects))))
for name, files in projects.items():
    os.makedirs(os.path.join(simple, name), exist_ok=True)
    links = []
    for w in files:
        with open(os.path.join(root, "wheels", w), "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
        links.append(f'<a href="../../wheels/{html.escape(w)}#sha256={digest}">{html.escape(w)}</a><br>\n')
    with open(os.path.join(simple, name, "index.html"), "w") as f:
        f.write(page(f"Links for {name}", "".join(links)))
print(f"{len(wheels)} wheels, {len(projects)} projects", file=sys.stderr)
PY
}

build() {
    local d tmp
    d=$(dir)
    if [ -f "$d/simple/index.html" ]; then echo "$d"; return 0; fi
    mkdir -p "$OUT"
    exec 9>"$OUT/.lock"
    flock 9
    if [ ! -f "$d/simple/index.html" ]; then
        command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 ||
            die "need python3 with pip on this machine (apt-get install python3-pip)"
        tmp=$(mktemp -d "$OUT/.new.XXXXXX")
        # shellcheck disable=SC2064
        trap "rm -rf '$tmp'" EXIT
        say "downloading wheels for $(grep -c '^[a-zA-Z]' "$REQ") requirements (+ ${EXTRA[*]}) ..."
        python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir --only-binary=:all: \
            --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
            --dest "$tmp/wheels" -r "$REQ" "${EXTRA[@]}" >&2 || die "pip download failed"
        index "$tmp" || die "writing the index failed"
        chmod -R a+rX "$tmp"
        mv "$tmp" "$d"
        trap - EXIT
        find "$OUT" -mindepth 1 -maxdepth 1 -type d ! -path "$d" ! -name '.new.*' -exec rm -rf {} +
    fi
    flock -u 9
    echo "$d"
}

case ${1:-} in
build) build ;;
dir) dir ;;
*) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SELF" >&2; exit 2 ;;
esac
