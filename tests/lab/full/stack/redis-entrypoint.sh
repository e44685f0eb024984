#!/bin/sh
# Entry point of the claw-lab/redis image (Redis 7.0 from Debian bookworm): runs redis-server in the
# foreground as PID 1 (user redis), listening on 0.0.0.0:6379 with protected-mode off, data in /data (a volume).
#   REDIS_PASSWORD   if set, clients must AUTH with it (requirepass; passed on stdin, not on the command line)
# Arguments starting with "-" are redis-server options (`command: ["--appendonly", "yes"]`); they are applied
# after these defaults, so they override them. Any other command is run as is.
set -eu
case ${1:-} in -*) set -- redis-server "$@" ;; esac
[ "${1:-}" = redis-server ] || exec "$@"
shift
defaults() {
    printf 'bind 0.0.0.0\nprotected-mode no\nport 6379\ndaemonize no\ndir /data\n'
    if [ -n "${REDIS_PASSWORD:-}" ]; then
        # Inside a double-quoted config string, \ and " need a backslash.
        printf 'requirepass "%s"\n' "$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')"
    fi
}
# `redis-server -` reads a config from stdin (a here-document), then applies the arguments on top.
exec redis-server - "$@" <<EOF
$(defaults)
EOF
