#!/usr/bin/env bash
# A throwaway Tryton for the demo, in the foreground (Ctrl-C stops it):
#   tests/tryton/serve.sh [PORT]      # default 8000, database "demo"
#   ordersync demo --tryton http://127.0.0.1:8000/demo
# A fresh copy of the test template (login admin / admin-secret, the sandbox
# catalogue as products) each time; nothing is kept.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PORT="${1:-8000}"
DIR="$("$HERE/setup.sh")"
RUN="$(mktemp -d)"
trap 'rm -rf "$RUN"' EXIT
mkdir -p "$RUN/db"
"$DIR/venv/bin/python" "$HERE/clone_db.py" "$DIR/template/ordersync.sqlite" "$RUN/db/demo.sqlite"
printf '[database]\nuri = sqlite://\npath = %s\nlanguage = en\n\n[web]\nlisten = 127.0.0.1:%s\n' \
  "$RUN/db" "$PORT" > "$RUN/trytond.conf"
echo "Tryton at http://127.0.0.1:$PORT/demo (login admin / admin-secret); Ctrl-C stops" >&2
# -d preloads the pool: trytond 8.2.1 fails every login without it.
"$DIR/venv/bin/trytond" -c "$RUN/trytond.conf" -d demo
