#!/bin/sh
# The stack's log-in roles, from the db service's environment (each set in .env):
#   LOANS_DB_USER, LOANS_DB_PASSWORD            the tables' owner: owns the database and its
#                                               schema, and is not a superuser; the loader and
#                                               the cron job log in as it
#   LOANS_ANALYST_USER, LOANS_ANALYST_PASSWORD  the analysts' log-in, a member of loans_reader
#                                               (which the migrations grant the tables and views)
# The postgres image runs it once, when it creates the database in an empty volume. It also takes
# the superuser's password away, so the superuser `postgres` logs in only from inside this
# container (`docker compose exec db psql -U postgres`).
#
# Run it again at any time to apply the names and passwords now in .env (docs/operations.md,
# "Passwords"):
#   docker compose up -d db && docker compose exec db /docker-entrypoint-initdb.d/roles.sh
# On a volume made when the tables' owner was the superuser, that run creates `postgres` (with no
# password) and takes superuser from the owner.
#
# No password reaches the server's log (`docker compose logs db`) or a command line: psql reads
# them from the environment, every name is checked before a statement that could fail on it is
# sent, and this session logs no statement text.
set -eu

say() { echo "roles.sh: $*" >&2; }
super=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$super}
for name in LOANS_DB_USER LOANS_DB_PASSWORD LOANS_ANALYST_USER LOANS_ANALYST_PASSWORD; do
  if eval "[ -z \"\${$name:-}\" ]"; then
    say "$name is empty or unset; set it in .env"
    exit 1
  fi
done
owner=$LOANS_DB_USER
analyst=$LOANS_ANALYST_USER
for name in "$owner" "$analyst"; do
  case $name in
    "$super" | loans_reader | pg_*)
      say "$name is reserved (the superuser, the readers' group or a built-in role); choose another name"
      exit 1 ;;
  esac
done
if [ "$owner" = "$analyst" ]; then
  say "the tables' owner and the analysts' user are both $owner; give them different names"
  exit 1
fi

run_psql() {
  psql -X -q -At -v ON_ERROR_STOP=1 --dbname "$db" -v super="$super" -v owner="$owner" \
    -v analyst="$analyst" -v db="$db" "$@"
}
# The superuser, or, on a volume from before, the owner, which was the superuser then.
as=$super
if ! run_psql --username "$as" -c 'SELECT 1' >/dev/null 2>&1; then
  as=$owner
fi
problem=$(run_psql --username "$as" <<'SQL'
SELECT CASE
    WHEN NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
        THEN format('neither %s nor %s is a superuser here: nothing was changed', :'super', :'owner')
    WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = :'analyst')
        THEN format('%s is a superuser: choose another LOANS_ANALYST_USER', :'analyst')
    ELSE '' END;
SQL
) || { say "cannot reach the database $db as $super or $owner"; exit 1; }
if [ -n "$problem" ]; then
  say "$problem"
  exit 1
fi

run_psql --username "$as" --single-transaction <<'SQL'
SET client_min_messages = warning;
SET log_statement = none;
SET log_min_error_statement = panic;
SET log_min_duration_statement = -1;
\getenv owner_password LOANS_DB_PASSWORD
\getenv analyst_password LOANS_ANALYST_PASSWORD
SELECT format('CREATE ROLE %I SUPERUSER LOGIN', :'super')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'super') \gexec
SELECT format('ALTER ROLE %I PASSWORD NULL', :'super') \gexec
SELECT 'CREATE ROLE loans_reader NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'loans_reader') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'analyst')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'analyst') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'analyst', :'analyst_password') \gexec
SELECT format('GRANT loans_reader TO %I', :'analyst') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner') \gexec
-- Last, as it may take superuser from this very session.
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'owner', :'owner_password') \gexec
SQL
say "the tables' owner is $owner (not a superuser), the analysts' user is $analyst (in loans_reader); passwords set from the environment"
