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
# "Settings and passwords"):
#   docker compose up -d db && docker compose exec db /docker-entrypoint-initdb.d/roles.sh
# On a volume made when the tables' owner was the superuser, that run makes that role the
# superuser `postgres` (with no password) and gives the tables to a new owner (see below).
#
# No password reaches the server's log (`docker compose logs db`) or a command line: psql reads
# them from the environment, every name is checked before a statement that could fail on it is
# sent, and this session logs no statement text.
set -eu

say() { echo "roles.sh: $*" >&2; }
super=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$super}
# First of all, the superuser's password goes (the image gave it LOANS_DB_PASSWORD): if a check
# below fails on a new volume, the image does not run this script again, and the superuser must
# not be left reachable over the network with a password the loader and cron hold.
psql -X -q -At --dbname "$db" --username "$super" -v super="$super" >/dev/null 2>&1 <<'SQL' || true
SELECT format('ALTER ROLE %I PASSWORD NULL', :'super')
 WHERE (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \gexec
SQL
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
    "$super" | loans_reader | loans_monitor | loans_roles_swap | pg_* | public | none | current_user | current_role | session_user)
      say "$name is reserved (the superuser, a role of this stack's, or a name PostgreSQL keeps); choose another name"
      exit 1 ;;
  esac
  # PostgreSQL would cut a longer name to 63 bytes, and the tools would then log in as another.
  if [ "$(printf '%s' "$name" | wc -c)" -gt 63 ]; then
    say "$name is longer than 63 bytes; choose a shorter name"
    exit 1
  fi
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
    WHEN (SELECT NOT r.rolsuper AND r.rolname <> :'owner'
            FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = :'db')
        THEN format('the database %s and its tables belong to %s: LOANS_DB_USER is fixed once the volume exists',
                    :'db', (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'))
    ELSE '' END;
SQL
) || { say "cannot reach the database $db as $super or $owner"; exit 1; }
if [ -n "$problem" ]; then
  say "$problem"
  exit 1
fi

# On a volume from before, the tables' owner is the role initdb made, the cluster's bootstrap
# superuser: it owns the system catalogs and every built-in function, so even without superuser it
# could still call lo_export (write any file as the server's OS user) and read pg_authid. That role
# therefore becomes the superuser $super, and a new role takes the owner's name and everything of
# this database's own that the old one owned (in one transaction, through a superuser made only for
# it and dropped after). A `postgres` made by an earlier roles.sh, which owns nothing, goes first.
swap=loans_roles_swap
bootstrap_owner=$(run_psql --username "$as" <<'SQL'
SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner' AND oid = 10);
SQL
)
if [ "$bootstrap_owner" = t ]; then
  say "the tables' owner $owner is the cluster's bootstrap superuser: it becomes $super, and a new $owner takes the tables"
  run_psql --username "$as" -v swap="$swap" <<'SQL'
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I SUPERUSER LOGIN', :'swap')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'swap') \gexec
SQL
  drop_swap() {
    run_psql --username "$1" -v swap="$swap" <<'SQL'
SELECT format('DROP ROLE %I', :'swap') \gexec
SQL
  }
  if ! run_psql --username "$swap" --single-transaction <<'SQL'
SET client_min_messages = warning;
SELECT format('DROP ROLE %I', :'super')
 WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'super' AND oid <> 10) \gexec
SELECT format('ALTER ROLE %I RENAME TO %I', :'owner', :'super') \gexec
SELECT format('ALTER ROLE %I SUPERUSER LOGIN PASSWORD NULL', :'super') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'owner') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner') \gexec
SELECT format('ALTER SCHEMA %I OWNER TO %I', nspname, :'owner')
  FROM pg_namespace WHERE nspowner = 10 AND oid >= 16384 \gexec
-- Tables and views; their indexes, triggers, row types and own sequences go with them.
SELECT format('ALTER TABLE %s OWNER TO %I', oid::regclass, :'owner')
  FROM pg_class WHERE relowner = 10 AND oid >= 16384 AND relkind IN ('r', 'p', 'v', 'm', 'f') \gexec
SELECT format('ALTER SEQUENCE %s OWNER TO %I', oid::regclass, :'owner')
  FROM pg_class WHERE relowner = 10 AND oid >= 16384 AND relkind = 'S' \gexec
SELECT format('ALTER ROUTINE %s OWNER TO %I', oid::regprocedure, :'owner')
  FROM pg_proc WHERE proowner = 10 AND oid >= 16384 AND prokind <> 'a' \gexec
SELECT format('ALTER TYPE %s OWNER TO %I', t.oid::regtype, :'owner')
  FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
 WHERE t.typowner = 10 AND t.oid >= 16384 AND t.typtype IN ('c', 'd', 'e', 'r')
   AND (c.oid IS NULL OR c.relkind = 'c') \gexec
SELECT format('ALTER LARGE OBJECT %s OWNER TO %I', oid, :'owner')
  FROM pg_largeobject_metadata WHERE lomowner = 10 \gexec
-- The owner's default privileges (the migrations grant loans_reader the tables still to come).
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I %s %s %s ON %s %s %s', r.role,
              CASE WHEN d.defaclnamespace = 0 THEN '' ELSE format('IN SCHEMA %I', n.nspname) END,
              r.verb, a.privilege_type,
              CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'
                                   WHEN 'T' THEN 'TYPES' WHEN 'n' THEN 'SCHEMAS' END,
              r.prep, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
  FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
 CROSS JOIN aclexplode(d.defaclacl) a
 CROSS JOIN (VALUES (:'owner', 'GRANT', 'TO'), (:'super', 'REVOKE', 'FROM')) r(role, verb, prep)
 WHERE d.defaclrole = 10 AND a.grantee <> 10 \gexec
-- Anything left of this database's own with the old owner stops here, and nothing is changed.
DO $$
DECLARE
    left_over text;
BEGIN
    SELECT string_agg(what, ', ') INTO left_over FROM (
        SELECT oid::regclass::text FROM pg_class WHERE relowner = 10 AND oid >= 16384
        UNION ALL SELECT oid::regprocedure::text FROM pg_proc WHERE proowner = 10 AND oid >= 16384
        UNION ALL SELECT oid::regtype::text FROM pg_type WHERE typowner = 10 AND oid >= 16384
        UNION ALL SELECT nspname::text FROM pg_namespace WHERE nspowner = 10 AND oid >= 16384
        UNION ALL SELECT 'large object ' || oid FROM pg_largeobject_metadata WHERE lomowner = 10
    ) o(what);
    IF left_over IS NOT NULL THEN
        RAISE EXCEPTION 'these still belong to the superuser, move them by hand: %', left_over;
    END IF;
END
$$;
SQL
  then
    drop_swap "$as"
    say "nothing was changed"
    exit 1
  fi
  drop_swap "$super"
  as=$super
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
-- loans-verify's read-only role; the owner may not grant it loans_reader, so it is made here.
SELECT 'CREATE ROLE loans_monitor NOLOGIN'
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'loans_monitor') \gexec
GRANT loans_reader TO loans_monitor;
SELECT format('CREATE ROLE %I LOGIN', :'analyst')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'analyst') \gexec
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'analyst', :'analyst_password') \gexec
SELECT format('GRANT loans_reader TO %I', :'analyst') \gexec
SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner') \gexec
-- Last, as it may take superuser from this very session.
SELECT format('ALTER ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              :'owner', :'owner_password') \gexec
SQL
say "the tables' owner is $owner (not a superuser), the analysts' user is $analyst (in loans_reader); passwords set from the environment"
