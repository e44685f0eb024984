#!/usr/bin/env bash
# Lab images of the claw-ai stack (issue 3, DESIGN.md section 8), built from Debian packages with mmdebstrap and
# `docker import` (no registry is reachable), cached by a hash of their recipe in the tag.
#
#   stack.sh build [NAME...]    build or reuse claw-lab/{postgres,redis,nginx,backend}:<hash12> (or only NAMEs),
#                               print one tag per line, save target/lab-images/NAME.tar (when missing or stale)
#                               and write target/lab-images/images.json {"NAME": {"tag", "id", "tar"}}
#   stack.sh gitserver-image    build or reuse claw-lab/gitserver:<hash12> (SSH git remote) and print its tag
#   stack.sh tags               print every image's tag without building anything
#   stack.sh prune              remove claw-lab/{NAME} images whose tag is not the current recipe's
#   stack.sh deps               install what building needs (mmdebstrap), if missing
#
# Environment: STACK_MIRROR (Debian mirror URL; default: the machine's apt sources), STACK_JOBS (images built
# at once, default 4), STACK_TIMING=1 (per-image build times on stderr). Logs: target/lab-images/logs/NAME.log.
# Needs root and a running Docker daemon. See tests/lab/full/stack/README.md for what each image reads.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../../.." && pwd -P)
SELF=$HERE/stack.sh
OUT=$REPO/target/lab-images
STACK_IMAGES=(postgres redis nginx python backend)
ALL_IMAGES=("${STACK_IMAGES[@]}" gitserver)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "stack.sh: $*" >&2; exit 1; }
note() { echo "stack.sh: $*" >&2; }
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 2; }

# ------------------------------------------------------------------------------------------- recipes
# spec_NAME sets SUITE, VARIANT, PKGS (apt names), CHANGES (docker import --change lines) and FILES (paths
# under $HERE that go into the image); customize_NAME ROOT runs on the finished root file system. The tag's
# hash covers all of these plus the shared functions below (see recipe_text), so editing a recipe rebuilds
# exactly the images it touches.
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# Each stand-in keeps the contract of the official image it replaces (templates/claw-ai/contract.toml, checked by
# tests/image_contract.rs) and offers nothing more the playbook relies on. Like the official images, postgres and
# redis have no USER: they start as root and their entrypoint steps down to the image's own user.
spec_postgres() { # postgres:15.N-bookworm: postgres is 999:999
    SUITE=bookworm VARIANT=essential
    PKGS=(postgresql-15)   # brings postgresql-client-15 (psql, pg_dump, pg_isready)
    FILES=(stack/postgres-entrypoint.sh)
    CHANGES=(
        "ENV PATH=/usr/lib/postgresql/15/bin:$BASE_PATH"
        'ENV LANG=C.UTF-8'
        'ENV PGDATA=/var/lib/postgresql/data'
        'VOLUME /var/lib/postgresql/data'
        'WORKDIR /var/lib/postgresql'
        'EXPOSE 5432'
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
        'CMD ["postgres"]'
    )
}
essential_postgres() { # before the packages are installed: fixed uid, no "main" cluster from postgresql-common
    add_user "$1" postgres 999 /var/lib/postgresql /bin/bash 'PostgreSQL administrator'
    mkdir -p "$1/etc/postgresql-common/createcluster.d"
    echo 'create_main_cluster = false' >"$1/etc/postgresql-common/createcluster.d/claw-lab.conf"
}
customize_postgres() {
    local r=$1
    rm -rf "$r"/etc/postgresql/15 "$r"/var/lib/postgresql/15   # in case a main cluster was made anyway
    install -m 755 "$HERE/stack/postgres-entrypoint.sh" "$r/usr/local/bin/docker-entrypoint.sh"
    in_root "$r" install -d -m 700 -o postgres -g postgres /var/lib/postgresql/data
    in_root "$r" install -d -m 2775 -o postgres -g postgres /run/postgresql
    mkdir -p "$r/docker-entrypoint-initdb.d"
    # Slimmer (358 -> ~210 MB): no JIT (libllvm14 and libz3-4 are used only by llvmjit.so; without it the
    # server runs with JIT unavailable, and the entrypoint sets jit = off) and no locale sources (initdb uses
    # the built-in C.UTF-8). dpkg then records postgresql-15's dependency on libllvm14 as unmet; the image has
    # no apt, and nothing in it checks.
    in_root "$r" dpkg --purge --force-depends libllvm14 libz3-4
    rm -rf "$r"/usr/lib/postgresql/15/lib/llvmjit* "$r"/usr/lib/postgresql/15/lib/bitcode \
        "$r"/usr/share/i18n/locales "$r"/usr/share/i18n/charmaps
}

spec_redis() { # redis:7.4.N-bookworm: redis is 999:999; no environment variable is read (REDIS_PASSWORD ignored)
    SUITE=bookworm VARIANT=essential
    PKGS=(redis-server)    # brings redis-tools (redis-cli)
    FILES=(stack/redis-entrypoint.sh)
    CHANGES=(
        "ENV PATH=$BASE_PATH"
        'VOLUME /data'
        'WORKDIR /data'
        'EXPOSE 6379'
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
        'CMD ["redis-server"]'
    )
}
essential_redis() { add_user "$1" redis 999 /var/lib/redis /usr/sbin/nologin; }
customize_redis() {
    local r=$1
    install -m 755 "$HERE/stack/redis-entrypoint.sh" "$r/usr/local/bin/docker-entrypoint.sh"
    in_root "$r" install -d -m 750 -o redis -g redis /data
}

spec_nginx() { # nginx:1.30.N-alpine: workers run as nginx (101:101), there is no www-data; curl is the HTTP client
    SUITE=trixie VARIANT=essential
    PKGS=(nginx curl)
    FILES=()
    CHANGES=(
        "ENV PATH=$BASE_PATH"
        'EXPOSE 80 443'
        'CMD ["nginx", "-g", "daemon off;"]'
    )
}
customize_nginx() {
    local r=$1 f
    # Like the official image: logs go to the container's stdout/stderr (`docker logs`).
    ln -sf /dev/stdout "$r/var/log/nginx/access.log"
    ln -sf /dev/stderr "$r/var/log/nginx/error.log"
    # The official image's only web user is nginx (101:101, home /var/cache/nginx); it has no www-data, so
    # neither has this one: Debian's (33) goes, what it owned becomes nginx's, and the default config names nginx.
    for f in passwd group shadow gshadow; do
        [ ! -e "$r/etc/$f" ] || sed -i '/^www-data:/d' "$r/etc/$f"
    done
    add_user "$r" nginx 101 /var/cache/nginx /sbin/nologin nginx
    find "$r" -xdev \( -uid 33 -o -gid 33 \) -exec chown -h 101:101 {} +
    install -d -m 755 -o 101 -g 101 "$r/var/cache/nginx"
    sed -i 's/^user www-data;/user nginx;/' "$r/etc/nginx/nginx.conf"
    grep -q '^user nginx;' "$r/etc/nginx/nginx.conf"
}

spec_python() { # stands in for python:3.11.15-slim-bookworm: see templates/claw-ai/README.md, "python"
    SUITE=bookworm VARIANT=minbase   # minbase = Debian's required packages, as debian:bookworm-slim (apt, passwd)
    PKGS=(python3.11 python3-pip ca-certificates netbase tzdata)   # 3.11.2, pip 23.0.1 (+ setuptools, wheel)
    FILES=()
    CHANGES=(
        'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
        'ENV LANG=C.UTF-8'
        'ENV PYTHON_VERSION=3.11.2'
        'CMD ["python3"]'
    )
}
customize_python() {
    local r=$1 t
    # pip may install into the system, as in the official image (whose Python is its own, under /usr/local):
    # Debian marks its Python externally managed (PEP 668); root's pip installs go to /usr/local there.
    rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
    # the official image's names, on /usr/local/bin (first on PATH)
    for t in python python3 python3.11; do ln -sfn /usr/bin/python3.11 "$r/usr/local/bin/$t"; done
    for t in pip pip3; do ln -sfn /usr/bin/pip3 "$r/usr/local/bin/$t"; done
    # the official image has no HTTP client program: neither may its stand-in (tests assert it)
    for t in curl wget; do
        [ ! -e "$r/usr/bin/$t" ] && [ ! -e "$r/bin/$t" ] || die "python stand-in: $t must not be in the image"
    done
}

spec_backend() { # tests/lab/full/backend built with its own Dockerfile (classic builder) FROM the python stand-in
    BUILD=docker FROM_IMAGE=python
    SUITE=bookworm VARIANT=- PKGS=()
    FILES=(backend pypi.sh)
    CHANGES=()
}
build_docker() { # NAME TMP_TAG: `DOCKER_BUILDKIT=0 docker build` of $HERE/NAME, its Dockerfile's FROM replaced
    # by the stand-in's claw-lab tag (official names exist only inside lab hosts), pip from the lab's wheels
    # (pypi.sh) served on this machine's loopback for the build only (--network host).
    local name=$1 tmp=$2 from official pypi port pid ctx rc=0
    from=$(tag_of "$FROM_IMAGE")
    have_image "$from" || die "build_docker: $from missing (build $FROM_IMAGE first)"
    official=$(awk 'toupper($1) == "FROM" { print $2; exit }' "$HERE/$name/Dockerfile")
    pypi=$(bash "$HERE/pypi.sh" build)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server --bind 127.0.0.1 --directory "$pypi" "$port" >/dev/null 2>&1 &
    pid=$!
    ctx=$(mktemp -d)
    copy_tree "$HERE/$name" "$ctx"
    sed -i "s|^FROM $official\$|FROM $from|" "$ctx/Dockerfile"
    grep -q "^FROM $from\$" "$ctx/Dockerfile" || { kill "$pid"; rm -rf "$ctx"; die "build_docker: no FROM $official line"; }
    for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$port/simple/" && break; sleep 0.1; done
    DOCKER_BUILDKIT=0 docker build --network host --pull=false \
        --build-arg "PIP_INDEX_URL=http://127.0.0.1:$port/simple/" --build-arg PIP_TRUSTED_HOST=127.0.0.1 \
        --build-arg "GIT_COMMIT=claw-lab-$(tag_of "$name" | cut -d: -f2)" \
        --label "org.claw-lab.recipe=$(tag_of "$name" | cut -d: -f2)" --label "org.claw-lab.from=$from" \
        -t "$tmp" "$ctx" || rc=$?
    kill "$pid" 2>/dev/null || true
    rm -rf "$ctx"
    return $rc
}

spec_gitserver() {
    SUITE=trixie VARIANT=essential
    PKGS=(openssh-server git)
    FILES=(backend stack/gitserver-init.sh stack/backend-v2.patch)
    CHANGES=(
        "ENV PATH=$BASE_PATH"
        'EXPOSE 22'
        'CMD ["/usr/local/sbin/gitserver-init"]'
    )
}
customize_gitserver() {
    local r=$1
    rm -f "$r"/etc/ssh/ssh_host_*                 # generated by openssh-server's postinst: never ship host keys
    install -m 755 "$HERE/stack/gitserver-init.sh" "$r/usr/local/sbin/gitserver-init"
    cat >"$r/etc/ssh/sshd_config.d/gitserver.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
AllowUsers git
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
LogLevel VERBOSE
EOF
    add_user "$r" git 1000 /home/git /usr/bin/git-shell 'git remote'
    install -d -m 755 -o 1000 -g 1000 "$r/home/git"

    # /srv/git/backend.git: tests/lab/full/backend as commit v1 on main, then v2 with a new VERSION and
    # stack/backend-v2.patch (migration 0002 and the code using it; made with `git diff` against backend/, so
    # regenerate it when app.py changes: the build fails if it no longer applies), and v3 (branch broken, from
    # v2) whose /health fails, for the update rollback test. Fixed dates and author, so the commit ids depend
    # only on the content.
    local src=/tmp/backend-src
    mkdir -p "$r$src"
    copy_tree "$HERE/backend" "$r$src"
    install -m 644 "$HERE/stack/backend-v2.patch" "$r/tmp/backend-v2.patch"
    # shellcheck disable=SC2016 # expanded by the inner sh
    in_root "$r" sh -euc '
        export GIT_AUTHOR_NAME="claw lab" GIT_AUTHOR_EMAIL=lab@claw.invalid
        export GIT_COMMITTER_NAME="claw lab" GIT_COMMITTER_EMAIL=lab@claw.invalid HOME=/tmp
        export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
        cd "$1"
        git init -q -b main .
        git add -A
        git commit -q -m "claw-ai backend 1.0.0"
        git tag -a v1 -m "release 1.0.0"
        export GIT_AUTHOR_DATE="2026-01-02T00:00:00Z" GIT_COMMITTER_DATE="2026-01-02T00:00:00Z"
        echo 2.0.0 >VERSION
        git apply --index /tmp/backend-v2.patch
        git commit -q -a -m "claw-ai backend 2.0.0 (items get a label: migration 0002)"
        git tag -a v2 -m "release 2.0.0"
        # v3: a release whose /health always fails (503), on a branch of its own: main stays at v2
        git checkout -q -b broken
        export GIT_AUTHOR_DATE="2026-01-03T00:00:00Z" GIT_COMMITTER_DATE="2026-01-03T00:00:00Z"
        echo 3.0.0 >VERSION
        printf "\n\ndef check_postgres() -> None:  # release 3.0.0 is broken on purpose\n    raise RuntimeError(\"release 3.0.0 is broken on purpose\")\n" >>app.py
        git commit -q -a -m "claw-ai backend 3.0.0 (broken: /health fails)"
        git tag -a v3 -m "release 3.0.0 (broken)"
        git checkout -q main
        git init -q --bare -b main /srv/git/backend.git
        git push -q /srv/git/backend.git main broken v1 v2 v3
        chown -R git:git /srv/git
    ' sh "$src"
    rm -rf "${r:?}$src" "${r:?}/tmp/backend-v2.patch"
}

# ------------------------------------------------------------------------------- shared build steps
in_root() { local r=$1; shift; chroot "$r" "$@"; }

add_user() { # ROOT NAME ID HOME SHELL [GECOS]: user and group NAME with uid = gid = ID, written directly (no
    # passwd/adduser needed; a package's later `adduser --system NAME` finds the user and keeps it). The
    # password is '*': no password, but not locked ('!' would make sshd refuse key logins without PAM).
    local r=$1 name=$2 id=$3 home=$4 shell=$5 gecos=${6:-}
    grep -q "^$name:" "$r/etc/group" || echo "$name:x:$id:" >>"$r/etc/group"
    grep -q "^$name:" "$r/etc/passwd" || echo "$name:x:$id:$id:$gecos:$home:$shell" >>"$r/etc/passwd"
    if [ -e "$r/etc/shadow" ] && ! grep -q "^$name:" "$r/etc/shadow"; then
        echo "$name:*::0:99999:7:::" >>"$r/etc/shadow"
    fi
    if [ -e "$r/etc/gshadow" ] && ! grep -q "^$name:" "$r/etc/gshadow"; then echo "$name:!::" >>"$r/etc/gshadow"; fi
}

copy_tree() { # SRC DST: the files of SRC (no caches), owned by root, world-readable
    tar -C "$1" --exclude=__pycache__ --exclude='*.pyc' --owner=0 --group=0 --mode=u+rwX,go+rX,go-w -cf - . \
        | tar -C "$2" --no-same-permissions -xf -
}

customize_common() { # ROOT: what every image drops, after its own customization
    local r=$1
    rm -rf "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/lintian \
        "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/var/log/apt/* "$r"/var/log/*.log
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    find "$r/run" -mindepth 1 -maxdepth 1 ! -name postgresql -exec rm -rf {} +
    : >"$r/etc/hostname"
    rm -f "$r/etc/resolv.conf"
}

dpkg_excludes() { # dpkg path filters: docs never get unpacked (in this build and in any later dpkg run)
    local d
    for d in doc man info locale lintian; do echo "--dpkgopt=path-exclude=/usr/share/$d/*"; done
    echo '--dpkgopt=path-include=/usr/share/locale/locale.alias'
}

build_rootfs() { # NAME: mmdebstrap the image's root file system as a tar on stdout
    local name=$1 cache=$OUT/debs/$SUITE
    mkdir -p "$cache"
    local excludes
    mapfile -t excludes < <(dpkg_excludes)
    local args=(--mode=root --variant="$VARIANT" --format=tar --include="$(IFS=,; echo "${PKGS[*]}")"
        --skip=essential/unlink --skip=cleanup/run "${excludes[@]}"
        # merged /usr with the usr-is-merged package, not usrmerge (which would pull in all of perl)
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
        --setup-hook="'$SELF' _hook setup $name \"\$1\"")
    if declare -F "essential_$name" >/dev/null; then
        args+=(--essential-hook="'$SELF' _hook essential $name \"\$1\"")
    fi
    args+=(--customize-hook="'$SELF' _hook customize $name \"\$1\"")
    mmdebstrap "${args[@]}" "$SUITE" - "$(mirror_url)"
}

hook() { # STAGE NAME ROOT: called back by mmdebstrap
    local stage=$1 name=$2 r=$3
    "spec_$name"
    local cache=$OUT/debs/$SUITE archives=$r/var/cache/apt/archives f
    shopt -s nullglob
    case $stage in
    setup) # reuse packages downloaded by earlier builds (hard links; apt checks their hashes)
        mkdir -p "$archives"
        for f in "$cache"/*.deb; do ln "$f" "$archives/" 2>/dev/null || cp "$f" "$archives/"; done
        ;;
    essential) "essential_$name" "$r" ;;
    customize)
        for f in "$archives"/*.deb; do
            [ -e "$cache/${f##*/}" ] || ln "$f" "$cache/" 2>/dev/null || cp "$f" "$cache/"
        done
        rm -f "$archives"/*.deb
        "customize_$name" "$r"
        customize_common "$r"
        ;;
    *) die "unknown hook stage $stage" ;;
    esac
}

# shellcheck source=debian-mirror.sh
source "$HERE/debian-mirror.sh"
mirror_url() { # the Debian archive the machine's apt uses (STACK_MIRROR overrides it)
    if [ -n "${STACK_MIRROR:-}" ]; then echo "$STACK_MIRROR"; return; fi
    debian_mirror
}

# ------------------------------------------------------------------------------------- tags, cache
recipe_text() { # NAME: everything the image is made from, except the Debian archive's current contents
    local name=$1 f BUILD=rootfs FROM_IMAGE=''
    "spec_$name"
    if [ "$BUILD" = docker ]; then # from another image of this script: its tag carries its recipe
        printf 'claw-lab image recipe 1\nname %s\nbuild docker\nfrom %s\n' "$name" "$(tag_of "$FROM_IMAGE")"
        declare -f build_docker copy_tree
        for f in "${FILES[@]}"; do
            (cd "$HERE" && find "$f" \( -name __pycache__ -prune \) -o -type f -print | LC_ALL=C sort \
                | while read -r p; do printf 'file %s %s\n' "$p" "$(stat -c %a "$p")"; cat "$p"; done)
        done
        return
    fi
    printf 'claw-lab image recipe 1\nname %s\nsuite %s\nvariant %s\npackages %s\n' \
        "$name" "$SUITE" "$VARIANT" "${PKGS[*]}"
    printf 'change %s\n' "${CHANGES[@]}"
    declare -f build_rootfs hook customize_common dpkg_excludes copy_tree in_root add_user "customize_$name"
    declare -F "essential_$name" >/dev/null && declare -f "essential_$name"
    for f in "${FILES[@]}"; do
        (cd "$HERE" && find "$f" \( -name __pycache__ -prune \) -o -type f -print | LC_ALL=C sort \
            | while read -r p; do printf 'file %s %s\n' "$p" "$(stat -c %a "$p")"; cat "$p"; done)
    done
}
tag_of() { echo "claw-lab/$1:$(recipe_text "$1" | sha256sum | cut -c1-12)"; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

build_one() { # NAME: build claw-lab/NAME:<hash> unless it exists; output and errors in logs/NAME.log
    local name=$1 tag tmp t0 log=$OUT/logs/$1.log BUILD=rootfs FROM_IMAGE=''
    tag=$(tag_of "$name")
    have_image "$tag" && return 0
    "spec_$name"
    t0=$(now_ms)
    tmp=claw-lab/$name:building-$$
    if [ "$BUILD" = docker ]; then
        mkdir -p "$OUT/logs"
        if ! { echo "== $(date -u +%FT%TZ) building $tag with docker build"; build_docker "$name" "$tmp"; } >"$log" 2>&1; then
            docker rmi "$tmp" >/dev/null 2>&1 || true
            note "building $tag failed; last lines of $log:"
            tail -n 25 "$log" >&2
            return 1
        fi
        docker tag "$tmp" "$tag" && docker rmi "$tmp" >/dev/null
        local ms=$(($(now_ms) - t0))
        echo "== built in $((ms / 1000)).$((ms % 1000 / 100)) s" >>"$log"
        [ -z "${STACK_TIMING:-}" ] || note "$tag built in $((ms / 1000)).$((ms % 1000 / 100)) s, $(image_mb "$tag") MB"
        return 0
    fi
    local changes=() c
    for c in "${CHANGES[@]}" "LABEL org.claw-lab.recipe=${tag##*:}" "LABEL org.claw-lab.suite=$SUITE"; do
        changes+=(--change "$c")
    done
    mkdir -p "$OUT/logs"
    if ! {
        echo "== $(date -u +%FT%TZ) building $tag from $SUITE ($(mirror_url))"
        build_rootfs "$name" | docker import "${changes[@]}" - "$tmp" && echo
    } >"$log" 2>&1; then
        docker rmi "$tmp" >/dev/null 2>&1 || true
        note "building $tag failed; last lines of $log:"
        tail -n 25 "$log" >&2
        return 1
    fi
    docker tag "$tmp" "$tag" && docker rmi "$tmp" >/dev/null
    local ms=$(($(now_ms) - t0))
    echo "== built in $((ms / 1000)).$((ms % 1000 / 100)) s" >>"$log"
    [ -z "${STACK_TIMING:-}" ] || note "$tag built in $((ms / 1000)).$((ms % 1000 / 100)) s, $(image_mb "$tag") MB"
}
image_mb() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%d", $1 / 1000000 }'; }

build_many() { # NAME...: build the missing images, STACK_JOBS at a time (backend after python, its base)
    local jobs=${STACK_JOBS:-4} name failed=0 pids=() names=() i
    local want=("$@")
    if [[ " ${want[*]} " == *" backend "* ]]; then
        [[ " ${want[*]} " == *" python "* ]] || want=(python "${want[@]}")
        local rest=() n
        for n in "${want[@]}"; do [ "$n" = backend ] || rest+=("$n"); done
        build_many "${rest[@]}"
        want=(backend)
    fi
    set -- "${want[@]}"
    for name in "$@"; do
        have_image "$(tag_of "$name")" && continue
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
        build_one "$name" & pids+=($!) names+=("$name")
    done
    for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed=1; done
    [ $failed = 0 ] || die "some images failed to build (see $OUT/logs/)"
}

save_tar() { # NAME: target/lab-images/NAME.tar, unless it already holds this image
    local name=$1 tag id tar=$OUT/$1.tar stamp=$OUT/$1.tar.id
    tag=$(tag_of "$name")
    id=$(docker image inspect -f '{{.Id}}' "$tag")
    # NAME.tar.id names the image the tar holds; the tar must also be newer than the image.
    if [ -s "$tar" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$tag $id" ] &&
        [ "$(stat -c %Y "$tar")" -ge "$(date -d "$(docker image inspect -f '{{.Created}}' "$tag")" +%s)" ]; then
        return 0
    fi
    rm -f "$stamp"
    docker save -o "$tar.tmp.$$" "$tag"
    chmod 644 "$tar.tmp.$$"
    mv -f "$tar.tmp.$$" "$tar"
    echo "$tag $id" >"$stamp"
    touch -r "$tar" "$stamp"
}

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

write_index() { # target/lab-images/images.json for every stack image
    local name sep='' tmp=$OUT/images.json.tmp.$$
    {
        echo '{'
        for name in "${STACK_IMAGES[@]}"; do
            local tag id
            tag=$(tag_of "$name")
            id=$(docker image inspect -f '{{.Id}}' "$tag")
            printf '%s  %s: {"tag": %s, "id": %s, "tar": %s}' "$sep" "$(json_str "$name")" "$(json_str "$tag")" \
                "$(json_str "$id")" "$(json_str "$OUT/$name.tar")"
            sep=$',\n'
        done
        printf '\n}\n'
    } >"$tmp"
    mv -f "$tmp" "$OUT/images.json"
}

ensure_deps() {
    command -v docker >/dev/null || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "the Docker daemon is not running"
    command -v mmdebstrap >/dev/null && return 0
    note "installing mmdebstrap"
    apt-get install -y -q mmdebstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q mmdebstrap >/dev/null; } \
        || die "cannot install mmdebstrap"
}

lock() { mkdir -p "$OUT"; exec 8>"$OUT/.lock"; flock 8; }

# -------------------------------------------------------------------------------------------- main
cmd=${1:-}; [ $# -gt 0 ] && shift
case $cmd in
_hook) hook "$@"; exit ;;
-h|--help|help|'') usage ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root"

case $cmd in
build)
    names=("$@"); [ ${#names[@]} -gt 0 ] || names=("${STACK_IMAGES[@]}")
    for n in "${names[@]}"; do [[ " ${STACK_IMAGES[*]} " == *" $n "* ]] || die "unknown image '$n' (${STACK_IMAGES[*]})"; done
    ensure_deps
    lock
    build_many "${names[@]}"
    for n in "${names[@]}"; do save_tar "$n"; tag_of "$n"; done
    # The index lists every stack image that exists (a partial build lists what it can).
    all=1; for n in "${STACK_IMAGES[@]}"; do have_image "$(tag_of "$n")" || all=; done
    if [ -n "$all" ]; then write_index; else note "not all images exist yet: images.json not written"; fi
    ;;
gitserver-image)
    ensure_deps
    lock
    build_many gitserver
    tag_of gitserver
    ;;
tags)
    for n in "${ALL_IMAGES[@]}"; do tag_of "$n"; done
    ;;
prune)
    for n in "${ALL_IMAGES[@]}"; do
        keep=$(tag_of "$n")
        docker image ls --format '{{.Repository}}:{{.Tag}}' "claw-lab/$n" | while read -r t; do
            [ "$t" = "$keep" ] || docker rmi "$t" >/dev/null || note "kept $t (in use?)"
        done
    done
    ;;
deps) ensure_deps ;;
*) usage ;;
esac
