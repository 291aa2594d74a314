#!/bin/sh
# Run by the postgres image once, when it creates the database in an empty volume: the analysts'
# log-in user (LOANS_ANALYST_USER, LOANS_ANALYST_PASSWORD), a member of loans_reader, which can
# read the tables and views and nothing else. The role's grants come with the schema (migration
# V004, applied by the loader). To change the password later:
#   docker compose exec db psql -U loans -c "ALTER ROLE analyst PASSWORD 'new one'"
set -eu
psql -v ON_ERROR_STOP=1 -X -q --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v user="${LOANS_ANALYST_USER:-analyst}" -v password="${LOANS_ANALYST_PASSWORD:-analyst}" <<'SQL'
SELECT 'CREATE ROLE loans_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'loans_reader') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE loans_reader', :'user', :'password') \gexec
SQL
echo "analyst.sh: created the log-in user ${LOANS_ANALYST_USER:-analyst}, a member of loans_reader"
