#!/usr/bin/env bash
# Light test lab for claw-provision (DESIGN.md section 8): N hosts, each a network namespace with its own
# OpenSSH sshd, private /etc and /var (overlays on the machine's) and private /run /tmp /root /home /opt /srv.
# See tests/lab/README.md. Needs root. Never changes the machine's /etc, /var, /opt, ...
#
#   lab.sh deps                           install the packages the lab needs (apt), if missing
#   lab.sh up N            [--name LAB]   start hosts h1..hN (tears down an existing lab of that name first)
#   lab.sh down            [--name LAB]   remove the lab (idempotent; also after a failed `up`)
#   lab.sh stop HOST       [--name LAB]   kill the host's sshd and every process of the host (disk state kept)
#   lab.sh start HOST      [--name LAB]   start the host's sshd again
#   lab.sh rekey HOST      [--name LAB]   new host key + restart sshd; known_hosts is NOT updated
#   lab.sh link HOST down|up [--name LAB] take the host's link down / up (connects then time out)
#   lab.sh exec HOST       [--name LAB] -- CMD...   run CMD as root inside the host (net, mount, uts namespaces)
#   lab.sh ssh HOST        [--name LAB] -- CMD...   ssh -F target/LAB/ssh_config HOST CMD...
#   lab.sh status          [--name LAB]   one line per host: address, sshd running/stopped, link up/down
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
TARGET=$REPO/target
NET=10.213              # lab K uses 10.213.K.0/24: bridge .1, host hI at .(I+1)
MAX_HOSTS=250
GLOBAL_LOCK=/run/lock/claw-lab.lock   # subnet allocation is machine-wide (several checkouts may run labs)
SSHD=/usr/sbin/sshd
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "lab.sh: $*" >&2; exit 1; }
T0=${EPOCHREALTIME/[.,]/}
phase() { # LAB_TIMING=1 prints how long each step of `up`/`down` took
    [ -n "${LAB_TIMING:-}" ] || return 0
    local us=$((${EPOCHREALTIME/[.,]/} - T0))
    printf 'lab.sh: %d.%03ds %s\n' $((us / 1000000)) $((us / 1000 % 1000)) "$*" >&2
}
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------- args
cmd=${1:-}; [ $# -gt 0 ] && shift
LAB=lab
args=() rest=()
while [ $# -gt 0 ]; do
    case $1 in
    --name) [ $# -ge 2 ] || usage; LAB=$2; shift 2 ;;
    --name=*) LAB=${1#--name=}; shift ;;
    --) shift; rest=("$@"); break ;;
    -h|--help) usage ;;
    *) args+=("$1"); shift ;;
    esac
done
[[ $LAB =~ ^[a-z0-9-]{1,20}$ ]] || die "bad lab name '$LAB' (want [a-z0-9-]{1,20})"
LD=$TARGET/$LAB
LOCKDIR=$TARGET/.lab-locks

[ "$(id -u)" = 0 ] || die "must run as root"

# --------------------------------------------------------------------------------------------- utils
lock_lab() { # serialise commands on one lab (fd 9; closed for every daemon we start)
    mkdir -p "$LOCKDIR"
    exec 9>"$LOCKDIR/$LAB.lock"
    flock 9
}

ensure_deps() {
    local -A need=()
    [ -x $SSHD ] || need[openssh-server]=1
    [ -x /usr/lib/openssh/sftp-server ] || need[openssh-sftp-server]=1
    command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need[openssh-client]=1
    command -v sudo >/dev/null && command -v visudo >/dev/null || need[sudo]=1
    command -v ip >/dev/null || need[iproute2]=1
    local c
    for c in nsenter unshare setsid flock findmnt; do command -v $c >/dev/null || need[util-linux]=1; done
    for c in mount umount; do command -v $c >/dev/null || need[mount]=1; done
    command -v ps >/dev/null || need[procps]=1
    command -v crontab >/dev/null || need[cron]=1          # hosts share the machine's /usr: crontab for cron tests
    for c in useradd usermod chpasswd; do command -v $c >/dev/null || need[passwd]=1; done
    [ ${#need[@]} -eq 0 ] && return 0
    local pkgs=("${!need[@]}") made_policy=
    echo "lab.sh: installing ${pkgs[*]}" >&2
    # Never let a package start the machine's own sshd as a service.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    local rc=0
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 ||
        { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2; } || rc=$?
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || die "apt-get install ${pkgs[*]} failed"
}

alive() { # PID: true if the process exists and has not exited (a zombie has exited, only not been reaped yet)
    local line
    { read -r line </proc/"$1"/stat; } 2>/dev/null || return 1
    line=${line##*) }                  # state is the field after "(comm) "
    case ${line:0:1} in Z|X|x) return 1 ;; esac
    return 0
}

kill_wait() { # PIDS...: SIGKILL them and wait until each is gone or a zombie (exited, not yet reaped)
    [ $# -gt 0 ] || return 0
    kill -KILL "$@" 2>/dev/null || true
    local t p left
    for ((t = 0; t < 1000; t++)); do
        left=()
        for p; do alive "$p" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && return 0
        set -- "${left[@]}"
        sleep 0.01
    done
    die "processes still alive after SIGKILL: $*"
}

netns_pids() { # NETNS...: print "PID NETNS" for every live process inside those network namespaces
    [ $# -gt 0 ] || return 0
    local -A ino2ns=()
    local ns ino f
    while read -r f ino; do
        ino2ns[$ino]=${f#/run/netns/}
    done < <(printf '/run/netns/%s\n' "$@" | xargs -d '\n' stat -L -c '%n %i' 2>/dev/null || true)
    [ ${#ino2ns[@]} -gt 0 ] || return 0
    # zombies have no ns/net any more, so they are not listed
    stat -L -c '%n %i' /proc/[0-9]*/ns/net 2>/dev/null | while read -r f ino; do
        ns=${ino2ns[$ino]:-}
        [ -n "$ns" ] || continue
        f=${f#/proc/}
        echo "${f%%/*} $ns"
    done || true
}

# kill every process in the given netns (except the pids in $keep), repeat until none is left
kill_netns_procs() { # KEEP_PIDS_SPACE_SEPARATED NETNS...
    local keep=" $1 " round pids p
    shift
    for ((round = 0; round < 20; round++)); do
        pids=()
        while read -r p _; do
            [[ $keep == *" $p "* ]] || pids+=("$p")
        done < <(netns_pids "$@")
        [ ${#pids[@]} -eq 0 ] && return 0
        kill_wait "${pids[@]}"
    done
    die "processes keep appearing in $*"
}

# ------------------------------------------------------------------------------------ lab geometry
lab_index() { # print K of this lab (from the lab dir, else from a bridge whose alias names this lab dir)
    if [ -s "$LD/index" ]; then cat "$LD/index"; return 0; fi
    local f a
    for f in /sys/class/net/clawbr*/ifalias; do
        [ -e "$f" ] || continue
        read -r a <"$f" || true
        if [ "$a" = "claw-lab $LD" ]; then f=${f%/ifalias}; echo "${f##*/clawbr}"; return 0; fi
    done
    return 1
}
hostnum() { [[ $1 =~ ^h([0-9]+)$ ]] || die "bad host name '$1' (want hN)"; echo "${BASH_REMATCH[1]}"; }
addr_of() { echo "$NET.$K.$(($1 + 1))"; }          # host number -> address
ns_of() { echo "claw-$K-$LAB-h$1"; }                # host number -> netns name
veth_of() { echo "cl${K}h$1"; }                     # host number -> root-side veth (<= 9 chars)
bridge_of() { echo "clawbr$K"; }
mac_of() { printf '02:00:0a:d5:%02x:%02x' "$K" "$1"; }  # last byte: 1 = bridge, I+1 = host hI
in_netns() { [ /proc/"$1"/ns/net -ef "/run/netns/$NS" ]; }   # PID: is it inside host $NS?

need_lab() {
    K=$(lab_index) || die "no lab '$LAB' (run: lab.sh up N --name $LAB)"
    [ -s "$LD/hosts.count" ] || die "lab '$LAB' is incomplete; run lab.sh down/up"
}
need_host() { # HOST -> sets I H NS
    I=$(hostnum "$1")
    H=$LD/hosts/h$I
    NS=$(ns_of "$I")
    [ -d "$H" ] && [ -e "/run/netns/$NS" ] || die "lab '$LAB' has no host $1"
}
# The pids are checked to live in the host's netns, so a recycled pid is never mistaken for them.
anchor_pid() { # -> sets APID to the pid of the host's anchor (holds its mount + uts namespaces), or fails
    APID=
    { read -r APID <"$H/anchor.pid"; } 2>/dev/null || return 1
    [[ $APID =~ ^[0-9]+$ ]] && alive "$APID" && in_netns "$APID"
}
sshd_pid() { # -> sets SPID to the pid of the host's sshd listener, or fails
    SPID=
    { read -r SPID <"$H/sshd.pid"; } 2>/dev/null || return 1
    [[ $SPID =~ ^[0-9]+$ ]] && alive "$SPID" && in_netns "$SPID"
}

# --------------------------------------------------------------------------------------------- down
teardown() { # remove every trace of lab $LAB (caller holds the lab lock)
    local ks=() k
    k=$(lab_index 2>/dev/null) && ks+=("$k")
    # a bridge may also name this lab dir even if the index file says otherwise (crash mid-up)
    local f a
    for f in /sys/class/net/clawbr*/ifalias; do
        [ -e "$f" ] || continue
        read -r a <"$f" || true
        if [ "$a" = "claw-lab $LD" ]; then f=${f%/ifalias}; k=${f##*/clawbr}; [[ " ${ks[*]} " == *" $k "* ]] || ks+=("$k"); fi
    done
    for K in "${ks[@]}"; do
        local nss=() n
        while read -r n _; do
            [[ $n =~ ^claw-$K-$LAB-h[0-9]+$ ]] && nss+=("$n")
        done < <(ip netns list 2>/dev/null)
        kill_netns_procs "" "${nss[@]}"
        phase "down: processes of ${#nss[@]} hosts gone"
        local batch="" ours=
        for n in "${nss[@]}"; do batch+="netns del $n"$'\n'; done
        # bridge clawbrK and veths clKh*: only if the bridge is ours (or already gone)
        a=
        { read -r a <"/sys/class/net/$(bridge_of)/ifalias"; } 2>/dev/null || true
        if [ ! -e "/sys/class/net/$(bridge_of)" ] || [ "$a" = "claw-lab $LD" ]; then ours=1; fi
        if [ -n "$ours" ]; then
            while read -r n; do
                batch+="link del $n"$'\n'
            done < <(ip -o link show type veth 2>/dev/null | sed -n "s/^[0-9]*: \(cl${K}h[0-9]*\)@.*/\1/p")
        fi
        [ -n "$batch" ] && { printf '%s' "$batch" | ip -force -batch - 2>/dev/null || true; }
        [ -n "$ours" ] && { ip link del "$(bridge_of)" 2>/dev/null || true; }
        phase "down: network deleted"
    done
    # `ip netns add` made /run/netns a mount point; drop it again once no namespace at all is left
    # (under the machine-wide lock, which `up` also holds while it adds namespaces).
    mkdir -p "$(dirname "$GLOBAL_LOCK")"
    exec 8>"$GLOBAL_LOCK"
    flock 8
    if [ -d /run/netns ] && [ -z "$(ls -A /run/netns)" ] && findmnt -rn /run/netns >/dev/null; then
        umount /run/netns 2>/dev/null || true
    fi
    exec 8>&-
    phase "down: /run/netns checked"
    # Mounts live only in the hosts' private mount namespaces, which died with their processes; but be
    # thorough in case something was mounted in the root namespace by hand.
    if [ -d "$LD" ]; then
        local m
        findmnt -rn -o TARGET | awk -v d="$LD" 'index($0, d "/") == 1 || $0 == d' | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        # Deleting ~60 files per host takes seconds on a busy disk: move the dir out of the way (atomic,
        # so the lab is gone at once and `up` can start afresh) and delete it in the background.
        mv "$LD" "$TARGET/.trash-$LAB.${EPOCHREALTIME/[.,]/}"
    fi
    local t
    for t in "$TARGET/.trash-$LAB".*; do
        [ -d "$t" ] || continue
        setsid -f nice -n 10 rm -rf --one-file-system "$t" </dev/null >/dev/null 2>&1 8>&- 9>&-
    done
}

cmd_down() {
    lock_lab
    teardown
    echo "lab $LAB: down"
}

# ----------------------------------------------------------------------------------------------- up
alloc_index() { # choose a free K (machine-wide), create the bridge, record K in the lab dir
    mkdir -p "$(dirname "$GLOBAL_LOCK")"
    exec 8>"$GLOBAL_LOCK"
    flock 8
    local used k
    # third octets of 10.213.x.y already used by any address or route on the machine
    used=" $({ ip -4 -o addr show | awk '{print $4}'; ip -4 route show table all | awk '{print $1}'; } 2>/dev/null |
        awk -F. -v a="${NET%%.*}" -v b="${NET#*.}" '$1 == a && $2 == b {print $3}' | tr '\n' ' ') "
    used+=" $(cat "$TARGET"/*/index 2>/dev/null | tr "\n" " " || true) "
    for ((k = 1; k <= 254; k++)); do
        [[ $used == *" $k "* ]] && continue
        [ -e /sys/class/net/clawbr$k ] && continue
        K=$k
        echo "$K" >"$LD/index"
        local br; br=$(bridge_of)
        ip link add "$br" address "$(mac_of 1)" type bridge
        ip link set "$br" alias "claw-lab $LD"
        ip addr add "$NET.$K.1/24" dev "$br"
        ip link set "$br" up
        exec 8>&-
        return 0
    done
    exec 8>&-
    die "no free subnet $NET.K.0/24 (K = 1..254)"
}

gen_client_keys() {
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB" -f "$LD/id_ed25519" &
    ssh-keygen -q -t ecdsa -b 256 -N '' -C "claw-lab-$LAB-ecdsa" -f "$LD/id_ecdsa" &
    ssh-keygen -q -t rsa -b 3072 -N '' -C "claw-lab-$LAB-rsa" -f "$LD/id_rsa" &
    ssh-keygen -q -t ed25519 -N labphrase -C "claw-lab-$LAB-enc" -f "$LD/id_ed25519_enc" &
    ssh-keygen -q -t ed25519 -N '' -C "claw-lab-$LAB-other (authorized nowhere)" -f "$LD/id_other" &
    local p rc=0
    for p in $(jobs -p); do wait "$p" || rc=1; done
    return $rc
}

write_fstab() { # DIR REL: the mounts hostinit.sh makes for a host (REL = DIR relative to the lab dir)
    local S=/proc/self/fd/8/$2
    printf '%s\n' \
        "# generated by tests/lab/lab.sh; mounted by hostinit.sh inside the host's private mount namespace" \
        "overlay /etc overlay lowerdir=/etc,upperdir=$S/etc.upper,workdir=$S/etc.work 0 0" \
        "overlay /var overlay lowerdir=/var,upperdir=$S/var.upper,workdir=$S/var.work 0 0" \
        "$S/run /run none bind 0 0" \
        "$S/tmp /tmp none bind 0 0" \
        "$S/root /root none bind 0 0" \
        "$S/home /home none bind 0 0" \
        "$S/opt /opt none bind 0 0" \
        "$S/srv /srv none bind 0 0" \
        "claw-lab-shm /dev/shm tmpfs mode=1777,nosuid,nodev,size=64m 0 0" >"$1/fstab"
}

build_template() { # the users, sudoers, authorized_keys etc. every host starts with (copied per host)
    local T=$LD/template
    mkdir -p "$T"/{etc.upper,etc.work,var.upper,var.work,run/sshd,run/lock,tmp,root,home,opt,srv}
    chmod 0755 "$T"/{run,run/sshd,home,opt,srv}
    chmod 1777 "$T"/{tmp,run/lock}
    chmod 0700 "$T/root"
    write_fstab "$T" template
    unshare --mount --propagation private -- /bin/bash "$HERE/hostinit.sh" template "$LD" \
        </dev/null >"$LD/template.log" 2>&1 9>&- ||
        { cat "$LD/template.log" >&2; die "building the host template failed"; }
    rm -f "$T/etc.upper/resolv.conf"
    printf '# lab host: no DNS (no default route); names come from /etc/hosts\nnameserver 127.0.0.1\n' \
        >"$T/etc.upper/resolv.conf"
}

write_sshd_config() { # I H
    local addr; addr=$(addr_of "$1")
    cat >"$2/sshd_config" <<EOF
# generated by tests/lab/lab.sh: lab $LAB, host h$1
ListenAddress $addr
Port 22
HostKey $2/ssh_host_ed25519_key
PidFile $2/sshd.pid
LogLevel VERBOSE
UseDNS no
UsePAM yes
PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
PrintMotd no
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
}

start_anchor() { # needs I H NS; sets APID
    APID=$(setsid -f nsenter --net="/run/netns/$NS" -- \
        unshare --mount --uts --propagation private -- /bin/bash "$HERE/hostinit.sh" anchor "$LD" "h$I" \
        </dev/null 2>>"$H/host.log" 8>&- 9>&-) || true
    [[ $APID =~ ^[0-9]+$ ]] && alive "$APID" || { tail -n 20 "$H/host.log" >&2; die "h$I: could not set up the host's namespaces"; }
    echo "$APID" >"$H/anchor.pid"
    in_netns "$APID" || die "h$I: anchor is not in $NS"
}

start_sshd() { # needs I H NS; anchor must run
    local spid t p
    anchor_pid || die "h$I: host is not running (its namespaces are gone); run lab.sh up again"
    if sshd_pid; then return 0; fi
    rm -f "$H/sshd.pid"
    # The sh prints its pid (= sshd's pid after exec) and closes stdout so that $(...) returns.
    spid=$(setsid -f nsenter -t "$APID" --net --mount --uts -- /bin/sh -c \
        'echo $$; exec "$0" -D -f "$1" -E "$2" </dev/null >>"$3" 2>&1' \
        "$SSHD" "$H/sshd_config" "$H/sshd.log" "$H/host.log" </dev/null 2>>"$H/host.log" 8>&- 9>&-) || true
    [[ $spid =~ ^[0-9]+$ ]] || die "h$I: could not start sshd (see $H/host.log)"
    # sshd writes its PidFile after binding the listen socket: that is our readiness signal.
    for ((t = 0; t < 1000; t++)); do
        p=
        { read -r p <"$H/sshd.pid"; } 2>/dev/null || true
        [ "$p" = "$spid" ] && return 0
        alive "$spid" || break
        sleep 0.01
    done
    tail -n 20 "$H/sshd.log" "$H/host.log" >&2 || true
    die "h$I: sshd did not start"
}

stop_host_procs() { # needs I H NS: kill sshd and every other process of the host except the anchor
    anchor_pid || true
    kill_netns_procs "$APID" "$NS"
    rm -f "$H/sshd.pid"
}

host_up() { # I: prepare the host dir, start namespaces and sshd (runs in parallel for all hosts)
    I=$1
    H=$LD/hosts/h$I
    NS=$(ns_of "$I")
    local addr gwmac
    addr=$(addr_of "$I")
    printf -v gwmac '02:00:0a:d5:%02x:01' "$K"
    cp -a "$LD/template" "$H"
    printf '%s\n' "h$I" >"$H/etc.upper/hostname"
    printf '%s\n' "# lab $LAB, host h$I (private /etc/hosts; no DNS in the lab)" "127.0.0.1	localhost" \
        "::1	localhost ip6-localhost ip6-loopback" "$addr	h$I" "$NET.$K.1	lab-gateway" >"$H/etc.upper/hosts"
    write_fstab "$H" "hosts/h$I"
    ssh-keygen -q -t ed25519 -N '' -C "root@h$I" -f "$H/ssh_host_ed25519_key"
    write_sshd_config "$I" "$H"
    printf '%s\n' "link set lo up" "addr add $addr/24 dev eth0" "link set eth0 up" \
        "neigh replace $NET.$K.1 lladdr $gwmac dev eth0 nud permanent" |
        nsenter --net="/run/netns/$NS" -- ip -batch -    # (`ip -n` would also copy the mount namespace)
    start_anchor
    start_sshd
    : >"$H/.up-ok"
}

cmd_up() {
    [ ${#args[@]} -eq 1 ] && [[ ${args[0]} =~ ^[0-9]+$ ]] || usage
    local n=${args[0]} i
    { [ "$n" -ge 1 ] && [ "$n" -le $MAX_HOSTS ]; } || die "N must be 1..$MAX_HOSTS"
    case $REPO/ in
    /etc/*|/var/*) die "the repository must not live under /etc or /var (they are the lower layers of the hosts' overlays)" ;;
    esac
    ensure_deps
    lock_lab
    teardown
    phase "old lab removed"
    mkdir -p "$LD/hosts"
    alloc_index
    local br; br=$(bridge_of)

    gen_client_keys &
    local keys_job=$!

    # network: all netns + veths + bridge ports + permanent neighbour entries in one ip batch
    local batch=""
    for ((i = 1; i <= n; i++)); do
        batch+="netns add $(ns_of $i)
link add $(veth_of $i) type veth peer name eth0 address $(mac_of $((i + 1))) netns $(ns_of $i)
link set $(veth_of $i) master $br up
neigh replace $(addr_of $i) lladdr $(mac_of $((i + 1))) dev $br nud permanent
"
    done
    exec 8>"$GLOBAL_LOCK"
    flock 8
    printf '%s' "$batch" | ip -batch - || die "creating the network failed"
    exec 8>&-

    phase "network created"
    wait "$keys_job" || die "client key generation failed"
    phase "client keys generated"
    build_template
    phase "host template built"

    # per-host work in parallel (bounded)
    local par=${LAB_JOBS:-$(( $(nproc) * 8 ))} running=0
    for ((i = 1; i <= n; i++)); do
        ( host_up "$i" ) 2>>"$LD/up.log" &
        running=$((running + 1))
        if [ $running -ge $par ]; then wait -n || true; running=$((running - 1)); fi
    done
    wait || true
    phase "hosts started"
    local failed=()
    for ((i = 1; i <= n; i++)); do [ -e "$LD/hosts/h$i/.up-ok" ] || failed+=("h$i"); done
    if [ ${#failed[@]} -gt 0 ]; then
        tail -n 30 "$LD/up.log" >&2 || true
        die "lab $LAB: hosts failed to come up: ${failed[*]} (clean up with: lab.sh down --name $LAB)"
    fi
    rm -f "$LD"/hosts/h*/.up-ok

    write_client_files "$n"
    echo "$n" >"$LD/hosts.count"
    echo "lab $LAB: $n hosts up (inventory: target/$LAB/inventory.toml)"
}

write_client_files() { # N
    local n=$1 i addr kh="" inv ssh_cfg="" json="" sep=""
    for ((i = 1; i <= n; i++)); do
        addr=$(addr_of $i)
        local hk; read -r -a hk <"$LD/hosts/h$i/ssh_host_ed25519_key.pub"
        kh+="$addr ${hk[0]} ${hk[1]}"$'\n'
    done
    printf '%s' "$kh" >"$LD/known_hosts"

    inv="# generated by tests/lab/lab.sh for lab $LAB
playbook = \"../../playbooks/demo.toml\"

[defaults]
user = \"claw\"
port = 22
identity_file = \"id_ed25519\"
known_hosts = \"known_hosts\"
host_key_policy = \"strict\"
connect_timeout = 10
become = true

[groups.lab]
vars = { }
"
    for ((i = 1; i <= n; i++)); do
        inv+="
[hosts.h$i]
address = \"$(addr_of $i)\"
groups = [\"lab\"]
"
    done
    printf '%s' "$inv" >"$LD/inventory.toml"

    ssh_cfg="# generated by tests/lab/lab.sh for lab $LAB; use: ssh -F $LD/ssh_config h1
"
    for ((i = 1; i <= n; i++)); do
        ssh_cfg+="
Host h$i
  HostName $(addr_of $i)
  Port 22
  User claw
  IdentityFile $LD/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $LD/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  UpdateHostKeys no
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
"
    done
    printf '%s' "$ssh_cfg" >"$LD/ssh_config"

    json="{\"name\": \"$LAB\", \"subnet\": \"$NET.$K.0/24\", \"hosts\": ["
    for ((i = 1; i <= n; i++)); do
        local H=$LD/hosts/h$i
        json+="$sep
  {\"name\": \"h$i\", \"address\": \"$(addr_of $i)\", \"port\": 22, \"netns\": \"$(ns_of $i)\", \"sshd_log\": \"$H/sshd.log\", \"pid_file\": \"$H/sshd.pid\", \"root\": \"$H\"}"
        sep=,
    done
    json+="
]}"
    printf '%s\n' "$json" >"$LD/lab.json"
}

# ------------------------------------------------------------------------------------ host commands
one_host_arg() { [ ${#args[@]} -eq "$1" ] || usage; need_lab; need_host "${args[0]}"; }

cmd_stop() { one_host_arg 1; lock_lab; stop_host_procs; echo "lab $LAB: h$I stopped"; }
cmd_start() { one_host_arg 1; lock_lab; start_sshd; echo "lab $LAB: h$I started"; }
cmd_rekey() {
    one_host_arg 1
    lock_lab
    stop_host_procs
    rm -f "$H/ssh_host_ed25519_key" "$H/ssh_host_ed25519_key.pub"
    ssh-keygen -q -t ed25519 -N '' -C "root@h$I (rekeyed)" -f "$H/ssh_host_ed25519_key"
    start_sshd
    echo "lab $LAB: h$I has a new host key (known_hosts unchanged)"
}
cmd_link() {
    one_host_arg 2
    case ${args[1]} in up|down) ;; *) usage ;; esac
    ip link set "$(veth_of "$I")" "${args[1]}"
    echo "lab $LAB: h$I link ${args[1]}"
}
cmd_exec() {
    [ ${#args[@]} -ge 1 ] || usage
    rest=("${args[@]:1}" "${rest[@]}") args=("${args[0]}")   # `--` is optional
    one_host_arg 1
    anchor_pid || die "h$I: host is not running"
    [ ${#rest[@]} -gt 0 ] || rest=(/bin/bash -l)
    exec nsenter -t "$APID" --net --mount --uts -- "${rest[@]}"
}
cmd_ssh() {
    [ ${#args[@]} -ge 1 ] || usage
    rest=("${args[@]:1}" "${rest[@]}") args=("${args[0]}")   # `--` is optional
    need_lab
    hostnum "${args[0]}" >/dev/null
    exec ssh -F "$LD/ssh_config" "${args[0]}" "${rest[@]}"
}
cmd_status() {
    need_lab
    local n i st lk
    n=$(cat "$LD/hosts.count")
    echo "lab $LAB: subnet $NET.$K.0/24, $n hosts, dir $LD"
    for ((i = 1; i <= n; i++)); do
        H=$LD/hosts/h$i NS=$(ns_of $i) I=$i
        if sshd_pid; then st="sshd running (pid $SPID)"; elif anchor_pid; then st="sshd stopped"; else st="DOWN"; fi
        if ip link show "$(veth_of $i)" 2>/dev/null | grep -q '[<,]UP[,>]'; then lk="link up"; else lk="link down"; fi
        echo "h$i $(addr_of $i) $st, $lk"
    done
}

case $cmd in
deps) [ ${#args[@]} -eq 0 ] || usage; ensure_deps ;;
up) cmd_up ;;
down) [ ${#args[@]} -eq 0 ] || usage; cmd_down ;;
stop) cmd_stop ;;
start) cmd_start ;;
rekey) cmd_rekey ;;
link) cmd_link ;;
exec) cmd_exec ;;
ssh) cmd_ssh ;;
status) cmd_status ;;
*) usage ;;
esac
