#!/bin/bash
# Entry point of the claw-lab/postgres image (PostgreSQL 15 from Debian bookworm), modelled on the official
# image: on first start (no $PGDATA/PG_VERSION) it creates the cluster from the environment, then runs postgres
# in the foreground as PID 1.
#   POSTGRES_PASSWORD   required on first start (unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER       superuser name (default postgres)
#   POSTGRES_DB         database created for it (default = POSTGRES_USER)
#   POSTGRES_INITDB_ARGS extra initdb arguments; POSTGRES_HOST_AUTH_METHOD (default scram-sha-256)
#   PGDATA              cluster directory (default /var/lib/postgresql/data, a volume)
# TCP connections from anywhere need the password; the unix socket inside the container is trusted
# (pg_isready, psql, pg_dump via `docker exec`). /docker-entrypoint-initdb.d/*.sh|*.sql run once after init.
# Like the official image (postgres:15.N-bookworm, no USER) it starts as root, gives $PGDATA and /run/postgresql
# to postgres (999:999) and runs again as postgres; started as another user, it runs as that user.
set -Eeuo pipefail
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
log() { echo "postgres-entrypoint: $*" >&2; }

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /run/postgresql
    find "$PGDATA" /run/postgresql ! -user postgres -exec chown postgres:postgres {} +
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA" 2>/dev/null || true
    if [ ! -w "$PGDATA" ]; then
        log "$PGDATA is not writable by $(id -un) (uid $(id -u)); use a named volume or chown it to uid $(id -u postgres)"
        exit 1
    fi
    chmod 700 "$PGDATA" 2>/dev/null || true
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        log "database is uninitialised and POSTGRES_PASSWORD is not set (set it, or POSTGRES_HOST_AUTH_METHOD=trust)"
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    log "initialising $PGDATA (superuser $user, database $db)"
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, like in the official image
    initdb --username="$user" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD:-}") --auth-local=trust \
        --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8 ${POSTGRES_INITDB_ARGS:-} >/dev/null
    printf '\n# claw-lab image\nlisten_addresses = '"'*'"'\njit = off\n' >>"$PGDATA/postgresql.conf"
    printf 'host all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    # Temporary server on the unix socket only, for the database and the init scripts.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user" --dbname postgres -q)
    if [ "$db" != postgres ]; then
        "${psql[@]}" --set db="$db" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        # shellcheck disable=SC1090 # sources the user's init scripts
        case $f in
        *.sh) log "running $f"; . "$f" ;;
        *.sql) log "running $f"; "${psql[@]}" --dbname "$db" -f "$f" ;;
        *.sql.gz) log "running $f"; gzip -dc "$f" | "${psql[@]}" --dbname "$db" ;;
        *) [ ! -e "$f" ] || log "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    log "initialised; starting"
fi

exec "$@"
