#!/bin/sh
# Run by the postgres image once, when it creates the database in an empty volume: the analysts'
# log-in user (LOANS_ANALYST_USER, LOANS_ANALYST_PASSWORD), a member of loans_reader, which can
# read the tables and views and nothing else. The role's grants come with the schema (the
# migrations, applied by the loader). To change the password later:
#   docker compose exec db psql -U loans -c "ALTER ROLE analyst PASSWORD 'new one'"
#
# The password must never reach the server's log (`docker compose logs db`): a failed statement
# is logged with its text, so the name is checked before the role is made, and this session
# logs no statement text at all.
set -eu
user=${LOANS_ANALYST_USER:-analyst}
password=${LOANS_ANALYST_PASSWORD-analyst}
if [ -z "$password" ]; then
  echo "analyst.sh: LOANS_ANALYST_PASSWORD is empty; give the analysts' user a password" >&2
  exit 1
fi
run_psql() {
  psql -v ON_ERROR_STOP=1 -X -q -At --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}
taken=$(run_psql -v user="$user" <<'SQL'
SELECT count(*) FROM pg_roles WHERE rolname = :'user';
SQL
)
if [ "$taken" != 0 ]; then
  echo "analyst.sh: a role named $user exists already; choose another LOANS_ANALYST_USER" >&2
  exit 1
fi
run_psql -v user="$user" -v password="$password" <<'SQL'
SET log_statement = none;
SET log_min_error_statement = panic;
SELECT 'CREATE ROLE loans_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'loans_reader') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE loans_reader', :'user', :'password') \gexec
SQL
echo "analyst.sh: created the log-in user $user, a member of loans_reader"
