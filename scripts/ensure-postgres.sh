#!/usr/bin/env bash
# Makes sure a local PostgreSQL (from Debian) is installed and running, with a role and database
# `streamfirst` (password `streamfirst`). Idempotent. Prints the connection URL on stdout; all
# progress goes to stderr. Used by `make test` for the PostgreSQL sink's tests.
set -euo pipefail

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing postgresql (Debian)" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# The newest installed major version, and its cluster `main`.
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$version main"; then
  echo "creating cluster $version/main" >&2
  $SUDO pg_createcluster "$version" main >&2
fi
status=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}')
if [ "$status" != "online" ]; then
  echo "starting postgresql $version/main" >&2
  # A cluster that was not shut down cleanly (a machine restored from a snapshot) recovers on start;
  # pg_ctlcluster may report a failure although the server comes up: the wait below decides.
  if ! $SUDO pg_ctlcluster "$version" main start >&2; then
    echo "pg_ctlcluster reported a failure; waiting for the server to accept connections" >&2
  fi
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')

# Wait until it accepts connections (pg_ctlcluster start returns once the server is up,
# but be tolerant of a slow first start).
ready=no
for _ in $(seq 1 100); do
  if $SUDO su postgres -c "psql -p $port -qAtc 'select 1'" >/dev/null 2>&1; then ready=yes; break; fi
  sleep 0.2
done
if [ "$ready" != yes ]; then
  echo "PostgreSQL $version/main does not accept connections on port $port; see /var/log/postgresql/postgresql-$version-main.log" >&2
  exit 1
fi

$SUDO su postgres -c "psql -p $port -qAt" >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'streamfirst') THEN
    CREATE ROLE streamfirst LOGIN PASSWORD 'streamfirst';
  END IF;
END
$$;
SQL
if ! $SUDO su postgres -c "psql -p $port -qAtc \"select 1 from pg_database where datname='streamfirst'\"" | grep -q 1; then
  $SUDO su postgres -c "createdb -p $port -O streamfirst streamfirst" >&2
fi

echo "postgres://streamfirst:streamfirst@127.0.0.1:$port/streamfirst"
