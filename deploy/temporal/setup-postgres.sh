#!/bin/sh
# The schema job of docker-compose.yml (temporalio/admin-tools): creates and migrates
# Temporal's two databases, and creates the database Keel keeps its side-effect record and
# ledger archive in (KEEL_DATABASE_URL, KEEL_ARCHIVE_URL; Keel makes its own tables).
# Safe to run again: it runs on every `docker compose up`, and migrates after a server
# upgrade (match the admin-tools tag to the server's).
set -eu

: "${POSTGRES_SEEDS:?POSTGRES_SEEDS is required}"
: "${POSTGRES_USER:?POSTGRES_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
export SQL_PASSWORD
port="${DB_PORT:-5432}"
schema=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" -p "$port" "$@"
}

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$port"
until nc -z -w 5 "$POSTGRES_SEEDS" "$port"; do sleep 2; done

for db in temporal temporal_visibility; do
  dir=temporal
  [ "$db" = temporal_visibility ] && dir=visibility
  sql --db "$db" create
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$schema/$dir/versioned"
done
sql --db "${KEEL_DB:-keel}" create
echo "schemas ready"
