#!/usr/bin/env bash
# Prepare a real Tryton 8.2 for the integration tests, once per machine:
# a venv with the pinned modules (requirements.txt) and a template SQLite
# database with the modules activated and the master data of fixture.py.
# Cached under $ORDERSYNC_TRYTON_CACHE (default ~/.cache/ordersync-tryton),
# keyed by the hash of these files, so a change to any of them rebuilds it.
# Safe to run concurrently (flock) and again (prints the ready dir at once).
# Prints exactly one line on stdout: the cache dir, holding venv/ and
# template/ordersync.sqlite. Everything else goes to stderr.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${ORDERSYNC_TRYTON_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ordersync-tryton}"
KEY="$(cd "$HERE" && cat requirements.txt fixture.py trpc.py products.json setup.sh | sha256sum | cut -c1-16)"
DIR="$ROOT/$KEY"
DB=ordersync
PASSWORD=admin-secret   # test-only database on loopback
mkdir -p "$ROOT"
exec 9>"$ROOT/lock"
flock 9
if [ -f "$DIR/ready" ]; then echo "$DIR"; exit 0; fi
log() { printf 'tryton setup: %s\n' "$*" >&2; }
SECONDS=0
if [ ! -f "$DIR/venv-ready" ]; then
  rm -rf "$DIR"
  mkdir -p "$DIR"
  if ! python3 -m venv "$DIR/venv" >&2; then
    log "python3 -m venv failed: install python3-venv (Debian: apt-get install python3-venv)"
    exit 1
  fi
  log "installing trytond modules (pinned, requirements.txt)"
  "$DIR/venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt" >&2
  touch "$DIR/venv-ready"
fi
rm -rf "$DIR/work" "$DIR/template"
WORK="$DIR/work"
mkdir -p "$WORK/db" "$DIR/template"
printf '%s\n' "$PASSWORD" > "$WORK/admin.pass"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$WORK/trytond.conf" <<CONF
[database]
uri = sqlite://
path = $WORK/db
language = en

[web]
listen = 127.0.0.1:$PORT
CONF
touch "$WORK/db/$DB.sqlite"   # the SQLite backend needs the file to exist
log "initialising the database (about a minute)"
# --email: without it the first init prompts on stdin and CI hangs.
TRYTONPASSFILE="$WORK/admin.pass" "$DIR/venv/bin/trytond-admin" -c "$WORK/trytond.conf" \
  -d "$DB" --email admin@example.com -u sale stock_package_shipping --activate-dependencies >&2
# -d preloads the pool: trytond 8.2.1 fails every login without it.
"$DIR/venv/bin/trytond" -c "$WORK/trytond.conf" -d "$DB" > "$WORK/trytond.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true' EXIT
up=""
for _ in $(seq 1 120); do
  if python3 - "$PORT" <<'PY' 2>/dev/null
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/rpc/", method="POST",
    data=b'{"id":0,"method":"common.server.version","params":[]}',
    headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=2).read()
PY
  then
    up=1; break
  fi
  kill -0 "$PID" 2>/dev/null || break
  sleep 0.5
done
if [ -z "$up" ]; then log "trytond did not start:"; tail -30 "$WORK/trytond.log" >&2; exit 1; fi
log "loading master data"
"$DIR/venv/bin/python" "$HERE/fixture.py" "http://127.0.0.1:$PORT" "$DB" admin "$PASSWORD" >&2
kill "$PID"; wait "$PID" 2>/dev/null || true
trap - EXIT
"$DIR/venv/bin/python" "$HERE/clone_db.py" "$WORK/db/$DB.sqlite" "$DIR/template/$DB.sqlite"
rm -rf "$WORK"
touch "$DIR/ready"
log "ready in ${SECONDS}s"
echo "$DIR"
