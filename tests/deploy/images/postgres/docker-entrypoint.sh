#!/bin/sh
# Entry point of the TEST STAND-IN for postgres:15 (see the Dockerfile beside it): create the
# cluster on first start from POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB, then run the
# server in the foreground as the postgres user.
set -eu

if [ -z "${POSTGRES_PASSWORD:-}" ]; then
  echo "stand-in postgres: POSTGRES_PASSWORD must be set, as the official image requires" >&2
  exit 1
fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" --username="$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [ "$db" != postgres ]; then
    escaped=$(printf '%s' "$db" | sed 's/"/""/g')
    psql -X -q -v ON_ERROR_STOP=1 -U "$user" -d postgres -c "CREATE DATABASE \"$escaped\""
  fi
  # As the official image does: *.sh run (or sourced when not executable), *.sql fed to psql.
  for f in /docker-entrypoint-initdb.d/*; do
    # shellcheck disable=SC1090 # the scripts are the user's, found when the container starts
    case "$f" in
      *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql) psql -X -q -v ON_ERROR_STOP=1 -U "$user" -d "$db" -f "$f" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "stand-in postgres: created the cluster, superuser $user, database $db"
fi
exec "$@"
