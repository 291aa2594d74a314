# shellcheck shell=bash
# Helpers for scripts that need a private PostgreSQL cluster: source this file, then
#   pg_ensure_installed            install PostgreSQL's server programs if they are missing
#   pg_start DIR [SETTING...]      initdb (unless DIR has a cluster already) and start it; sets
#                                  PG_PORT: PG_PORT_WANTED if set, else a free port. With PG_PASSWORD set,
#                                  TCP connections need it (scram-sha-256) and it is the
#                                  superuser's; otherwise trust. fsync is off unless PG_DURABLE=1.
#                                  DIR is made private to the cluster's owner (mode 700): it holds
#                                  the socket, which trusts whoever can reach it.
#   pg_stop DIR                    stop it (the folder is left for the caller to remove)
#   pg_running DIR                 true when DIR's cluster is running
#   pg_dir_check DIR               true when DIR is fit for a cluster of ours: a folder, not a link,
#                                  owned by the cluster's owner, that group and others cannot
#                                  write to, holding a cluster or nothing but initdb's leftovers;
#                                  else prints why not (to follow "which") and is false
#   pg_psql DIR DB -c SQL          psql as the superuser over the cluster's socket
# initdb and postgres refuse to run as root, so as root they run as the `postgres` user.
# It sources tools.sh, for as_root and apt_install.

# shellcheck source=scripts/lib/tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"

pg_bindir() {
  if [ -n "${LOANS_PG_BINDIR:-}" ]; then
    echo "$LOANS_PG_BINDIR"
    return 0
  fi
  local dir
  dir=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] || return 1
  dirname "$dir"
}

pg_ensure_installed() {
  if pg_bindir >/dev/null && command -v psql >/dev/null; then
    return 0
  fi
  echo "PostgreSQL's server programs are missing: installing them with apt-get" >&2
  # The package would create and start a cluster of its own; we only want the programs.
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/loans.conf >/dev/null
  apt_install postgresql postgresql-client
  pg_bindir >/dev/null
}

# Runs a command as the cluster's owner: ourselves, or `postgres` when we are root.
pg_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
}

pg_start() {
  local dir=$1
  shift
  local bin
  bin=$(pg_bindir) || { echo "PostgreSQL is not installed" >&2; return 1; }
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    # The server runs as postgres: it must own DIR and be able to reach it.
    chown postgres:postgres "$dir"
    chmod o+x "$(dirname "$dir")"
  fi
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    local auth=(-A trust)
    if [ -n "${PG_PASSWORD:-}" ]; then
      (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$dir/pwfile")
      [ "$(id -u)" != 0 ] || chown postgres "$dir/pwfile"
      auth=(--auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pwfile")
    fi
    pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres "${auth[@]}" -E UTF8 --locale=C \
      --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    rm -f "$dir/pwfile"
  fi
  local settings="-c listen_addresses=127.0.0.1"
  # Throwaway clusters need no durability; PG_DURABLE=1 keeps PostgreSQL's safe defaults.
  if [ -z "${PG_DURABLE:-}" ]; then
    settings+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  local extra
  for extra in "$@"; do settings+=" -c $extra"; done
  # pg_ctl hands -o to a shell: DIR goes in quotes, so a folder with a space or a quote works.
  local quoted_dir="'${dir//\'/\'\\\'\'}'"
  local attempt
  for attempt in 1 2 3 4 5; do
    PG_PORT=${PG_PORT_WANTED:-$(pg_free_port)}
    if pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $PG_PORT -k $quoted_dir $settings" start >/dev/null 2>&1; then
      export PG_PORT
      return 0
    fi
    echo "PostgreSQL did not start on port $PG_PORT (attempt $attempt)" >&2
  done
  cat "$dir/server.log" >&2
  return 1
}

pg_running() {
  local dir=$1 bin
  bin=$(pg_bindir) || return 1
  [ -f "$dir/data/postmaster.pid" ] && pg_as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

pg_dir_check() {
  local dir=$1 owner found mode
  owner=$(id -un)
  [ "$(id -u)" != 0 ] || owner=postgres
  if [ -L "$dir" ] || [ ! -d "$dir" ]; then
    echo "is not a folder"
    return 1
  fi
  found=$(stat -c %U "$dir")
  if [ "$found" != "$owner" ]; then
    echo "belongs to $found, not $owner"
    return 1
  fi
  mode=$(stat -c %a "$dir")
  if (((8#$mode & 8#022) != 0)); then
    echo "group or others can write to (mode $mode)"
    return 1
  fi
  if [ ! -f "$dir/data/PG_VERSION" ] &&
    [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 ! -name initdb.log ! -name pwfile -print -quit)" ]; then
    echo "holds files but no cluster"
    return 1
  fi
}

pg_stop() {
  local dir=$1 bin
  bin=$(pg_bindir) || return 0
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
}

pg_psql() {
  local dir=$1 db=$2
  shift 2
  psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$PG_PORT" -U postgres -d "$db" "$@"
}
