#!/usr/bin/env bash
# A PostgreSQL server for the tests and for local replicas (docs/operations.md#postgresql-state).
# Usage: deploy/postgres/ensure.sh [DATA_DIR] [PORT]
# Does nothing when one already answers on 127.0.0.1:PORT. Otherwise installs Debian's postgresql
# package with apt-get when its binaries are missing, creates a throwaway cluster in DATA_DIR
# (trust authentication on loopback only) owned by the `postgres` user, and starts it.
set -euo pipefail
DATA_DIR="${1:-.postgres}"
PORT="${2:-55432}"

find_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
  done
  return 1
}

BIN="$(find_bin || true)"
if [ -n "$BIN" ] && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  exit 0
fi
if [ -z "$BIN" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: PostgreSQL is not installed; install Debian's postgresql package" \
      "(apt-get install postgresql) or set ITINERANT_TEST_STATE_URL to a server" >&2
    exit 1
  fi
  echo "installing postgresql with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  BIN="$(find_bin)"
fi

mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
  chown -R postgres: "$DATA_DIR"
  RUN_AS=(runuser -u postgres --)
fi
if [ ! -f "$DATA_DIR/PG_VERSION" ]; then
  "${RUN_AS[@]}" "$BIN/initdb" -D "$DATA_DIR" -U postgres --auth=trust >/dev/null
fi
"${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 \
  -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DATA_DIR -c fsync=off" start >/dev/null
"$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 30
echo "PostgreSQL on 127.0.0.1:$PORT (data in $DATA_DIR)"
