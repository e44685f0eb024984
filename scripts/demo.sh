#!/usr/bin/env bash
# The main job: claw-ai deployed by claw-provision onto full lab hosts, answering HTTPS.
#
#   bash scripts/demo.sh [N]          N full lab hosts (default 1; Debian + systemd + sshd in containers, with
#                                     the lab's apt mirror and git server): builds claw-provision and the lab
#                                     images, deploys playbooks/claw-ai.toml with `apply` (Docker, firewall,
#                                     certificate, secrets, the backend built from its git repository, the
#                                     stack), prints the URL and the answer of /health through nginx, then
#                                     applies again: nothing to change.
#   bash scripts/demo.sh --light [N]  the light demo: N light lab hosts (default 3), the demo playbook, then
#                                     claw-ai's server side (its Docker steps are skipped on light hosts)
#
# Works on a fresh machine of this project's kind (Debian, root, Rust toolchain, a running Docker daemon):
# installs the lab's packages. Prints progress lines; build output goes to target/demo-logs/ (the path is
# printed when something fails). Leaves the lab `demo` running; `bash tests/lab/lab.sh down --name demo`
# removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
LAB=demo
LD=$REPO/target/$LAB                 # the lab's directory (inventory, keys, CA), made by tests/lab/lab.sh
LOGS=$REPO/target/demo-logs          # outside $LD: `up` removes $LD first
T0=$SECONDS

light=
if [ "${1:-}" = --light ]; then light=1; shift; fi
n=${1:-$([ -n "$light" ] && echo 3 || echo 1)}
[[ $n =~ ^[1-9][0-9]?$ ]] || { echo "usage: bash scripts/demo.sh [--light] [N]" >&2; exit 2; }

say() { printf '[demo %3ds] %s\n' $((SECONDS - T0)) "$*"; }
# logged LOG COMMAND...: runs COMMAND with its output in $LOGS/LOG; on failure shows the end and the path.
logged() {
    local log=$LOGS/$1
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "---- last lines of $log:" >&2
        tail -n 25 "$log" >&2
        echo "demo: failed: $* (whole output: $log)" >&2
        return 1
    fi
}
mkdir -p "$LOGS"
# The API keys come from your environment (or ./secrets.env); placeholders when unset.
keys_note='... PINECONE_API_KEY=...                                     # as for the demo'
[ -n "${ZHIPUAI_API_KEY:-}${PINECONE_API_KEY:-}" ] ||
    keys_note='demo-placeholder-zhipuai PINECONE_API_KEY=demo-placeholder-pinecone  # the demo'"'"'s'
export ZHIPUAI_API_KEY="${ZHIPUAI_API_KEY:-demo-placeholder-zhipuai}"
export PINECONE_API_KEY="${PINECONE_API_KEY:-demo-placeholder-pinecone}"
bin=$REPO/target/debug/claw-provision
build_binary() { cargo build --locked --bin claw-provision; }

say "installing what the lab needs (apt, when missing)"
logged deps.log bash tests/lab/lab.sh deps

# ------------------------------------------------------------------------------------------- light
if [ -n "$light" ]; then
    say "building claw-provision (log: target/demo-logs/cargo.log)"
    logged cargo.log build_binary
    say "starting $n light lab hosts (lab $LAB)"
    logged lab-up.log bash tests/lab/lab.sh up "$n" --name "$LAB"
    inv=$LD/inventory.toml
    run() { echo "\$ claw-provision $*"; "$bin" "$@"; }
    run plan "$inv"
    run apply "$inv" --yes
    say "again: nothing to change"
    run apply "$inv" --yes
    # The claw-ai server side on the same hosts (Docker steps skipped by their `when`: no systemd).
    pb=playbooks/claw-ai.toml
    run plan "$inv" --playbook "$pb"
    run apply "$inv" --playbook "$pb" --yes
    say "again: nothing to change"
    run apply "$inv" --playbook "$pb" --yes
    say "done. The lab keeps running: try $bin plan $inv ; remove it: bash tests/lab/lab.sh down --name $LAB"
    exit 0
fi

# -------------------------------------------------------------------------------------------- full
command -v docker >/dev/null && docker info >/dev/null 2>&1 ||
    { echo "demo: full lab hosts need a running Docker daemon (or run: bash scripts/demo.sh --light)" >&2; exit 1; }

# The binary and the lab images (the scripts scripts/test.sh uses; cached by recipe hash) at the same time.
images() {
    bash tests/lab/full/image.sh build
    bash tests/lab/full/mirror.sh image
    bash tests/lab/full/pypi.sh build
    bash tests/lab/full/stack.sh build
    bash tests/lab/full/stack.sh gitserver-image
}
say "building claw-provision and the lab images (first time: minutes; logs: target/demo-logs/{cargo,images}.log)"
logged cargo.log build_binary &
cargo_pid=$!
logged images.log images &
images_pid=$!
rc=0
wait $cargo_pid || rc=1
wait $images_pid || rc=1
[ $rc = 0 ] || exit 1
say "built"

say "starting $n full lab hosts, apt mirror and git server (lab $LAB)"
logged lab-up.log bash tests/lab/lab.sh up-full "$n" --name "$LAB"

# ---- The demo's variables (the lab's stand-ins for what inventory/prod.toml sets for real servers).
# The lab's Docker apt mirror, the lab images shipped over SSH (no registry here), the backend's repository on
# the lab git server, the lab's certificate (tls_dir, from the lab inventory) for claw-ai.lab.
demo_vars() {
    python3 - "$LD/lab.json" "$REPO/target/lab-images/images.json" "$LD/tls" <<'PY'
import json, sys
lab, images, tls = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
git = lab["git"]
v = {
    "tls_dir": tls,
    "server_name": "claw-ai.lab",
    "docker_repo_url": lab["mirror"]["url"],
    "docker_repo_key": lab["mirror"]["key"],
    "ship_images": True,
    "postgres_image_local": images["postgres"]["tag"],
    "redis_image_local": images["redis"]["tag"],
    "nginx_image_local": images["nginx"]["tag"],
    # backend_build: what is shipped for the backend is its Dockerfile's FROM (python:3.11-slim's stand-in);
    # the image is built on the host from the checkout, pip reading the lab's PyPI mirror.
    "backend_image_local": images["python"]["tag"],
    "backend_repo": f"git@{git['address']}:{git['repo_path']}",
    "backend_ref": "v1",
    "deploy_key_src": git["deploy_key"],
    "git_known_hosts": f"{git['address']} {git['host_key']}",
    "backend_build": True,
    "backend_image": "claw-ai/backend",
    "pip_index_url": lab["pypi"]["url"],
    "backend_publish": len(lab["hosts"]) > 1,   # every host is one of nginx's upstreams
}
for k, x in v.items():
    print(f"{k} = {json.dumps(x)}")
PY
}
inv=$LD/claw-ai.toml
{
    # The lab's inventory (hosts, SSH, the backend group) with the claw-ai playbook and the variables above.
    sed -e 's#^playbook = .*#playbook = "../../playbooks/claw-ai.toml"#' -e '/^vars = { tls_dir = /d' \
        "$LD/inventory.toml"
    echo
    echo '[defaults.vars]'
    demo_vars
} >"$inv.tmp"
mv "$inv.tmp" "$inv"
h1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["hosts"][0]["address"])' "$LD/lab.json")

rel=${inv#"$REPO"/}
say "claw-provision apply $rel --yes   (fresh hosts: Docker, firewall, certificate, secrets, backend build, stack)"
t=$SECONDS
"$bin" apply "$inv" --yes
say "first apply: $((SECONDS - t)) s"

url=https://claw-ai.lab/health
say "claw-ai answers through nginx on h1 ($h1): $url"
echo "\$ curl --cacert ${LD#"$REPO"/}/tls/ca.pem --resolve claw-ai.lab:443:$h1 $url"
curl -sS --fail-with-body -m 20 --cacert "$LD/tls/ca.pem" --resolve "claw-ai.lab:443:$h1" "$url"
echo

say "claw-provision apply $rel --yes   (again: nothing to change)"
t=$SECONDS
rc=0
"$bin" apply "$inv" --yes --detailed-exitcode || rc=$?
case $rc in
0) say "second apply: $((SECONDS - t)) s, nothing changed" ;;
2) say "the second apply changed something (see above): the deployment does not converge"; exit 1 ;;
*) say "the second apply failed (exit $rc)"; exit 1 ;;
esac

say "done in $((SECONDS - T0)) s. The lab keeps running:"
cat <<EOF
  export ZHIPUAI_API_KEY=${keys_note}
  ${bin#"$REPO"/} plan $rel                           # what would change
  bash tests/lab/lab.sh ssh h1 --name $LAB -- sudo docker ps                  # the stack on h1
  curl --cacert ${LD#"$REPO"/}/tls/ca.pem --resolve claw-ai.lab:443:$h1 $url
  bash tests/lab/lab.sh down --name $LAB                                      # remove the lab
EOF
