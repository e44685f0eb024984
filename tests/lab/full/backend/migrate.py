"""claw-ai lab backend: apply the database migrations, a one-off command (the server never changes the schema).

    python3 migrate.py           apply every migrations/NNNN_name.sql not applied yet, in order of NNNN
    python3 migrate.py --check   change nothing; list what is pending (exit 3 if anything is)

Run it from the release's image with the server's settings (DATABASE_URL or POSTGRES_*: see app.py), e.g.
`docker compose run --rm --no-deps backend python3 migrate.py`, before that release's servers start. Exit 0:
the database is up to date (nothing applied, or everything applied; a database ahead of this release, migrated
by a later one, is fine too); 1: a migration failed (it is rolled back, the ones before it stay) or PostgreSQL
cannot be reached; 2: bad usage or migration file names.

Each migration runs in one transaction together with its row in schema_migrations(version, name, applied_at),
so it is applied entirely or not at all (no CREATE INDEX CONCURRENTLY in a migration). A PostgreSQL advisory lock
(session level) serializes concurrent runs: a second run waits for the first, then finds nothing left to
apply. lock_timeout (MIGRATE_LOCK_TIMEOUT, 10 s) bounds how long one migration waits for a table lock held by
live traffic; then it fails instead of queueing every request behind it.
"""

import re
import sys

import psycopg2

from settings import MIGRATIONS_DIR, SERVICE, env_float, postgres_kwargs

LOCK_ID = 0x636C6177  # "claw": the advisory lock key of migrate.py
NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def log(msg: str) -> None:
    print(f"migrate.py: {msg}", file=sys.stderr, flush=True)


def migrations() -> list:
    """[(version, name, path)] in order; exit 2 on a stray .sql name or a version used twice."""
    found = {}
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m = NAME.match(path.name)
        if not m:
            log(f"{path.name}: not a migration name (NNNN_name.sql, lower case)")
            sys.exit(2)
        version = int(m.group(1))
        if version in found:
            log(f"{path.name}: version {version} is also {found[version][2].name}")
            sys.exit(2)
        found[version] = (version, m.group(2), path)
    return [found[v] for v in sorted(found)]


def applied(cur, check: bool) -> dict:
    cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if check and not cur.fetchone()[0]:
        return {}
    cur.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    cur.execute("SELECT version, name FROM schema_migrations")
    return dict(cur.fetchall())


def lock(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_ID,))
        if not cur.fetchone()[0]:
            log("another migrate.py is running: waiting for it")
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
    conn.commit()


def run(check: bool) -> int:
    files = migrations()
    try:
        conn = psycopg2.connect(connect_timeout=10, application_name=f"{SERVICE} migrate", **postgres_kwargs())
    except psycopg2.Error as e:
        log(f"cannot connect to PostgreSQL: {str(e).strip()}")
        return 1
    try:
        lock(conn)
        with conn.cursor() as cur:
            done = applied(cur, check)
            conn.commit()
            pending = [f for f in files if f[0] not in done]
            known = {f[0] for f in files}
            ahead = sorted(v for v in done if v not in known)
            if ahead:
                log(f"the database has migrations this release does not know: {ahead} (fine: a later release's)")
            if check or not pending:
                for version, name, _ in pending:
                    log(f"pending {version:04d}_{name}")
                log("up to date" if not pending else f"{len(pending)} pending")
                return 3 if pending else 0
            cur.execute("SET lock_timeout = %s", (f"{int(env_float('MIGRATE_LOCK_TIMEOUT', 10, 0.1) * 1000)}ms",))
            for version, name, path in pending:
                try:
                    cur.execute(path.read_text())
                    cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                    conn.commit()
                except psycopg2.Error as e:
                    conn.rollback()
                    log(f"{path.name} failed, rolled back: {str(e).strip()}")
                    return 1
                log(f"applied {path.name}")
            log("up to date")
            return 0
    except psycopg2.Error as e:
        log(f"PostgreSQL: {str(e).strip()}")
        return 1
    finally:
        conn.close()  # ends the session: the advisory lock goes with it


def main(argv: list) -> int:
    if argv not in ([], ["--check"]):
        log("usage: python3 migrate.py [--check]")
        return 2
    return run(check=argv == ["--check"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
