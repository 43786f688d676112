#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests, from Debian's `postgresql`
# package: initdb + pg_ctl on a fresh temporary directory and a free port on
# 127.0.0.1 (the socket directory is the same temporary directory).
#
# Prints exactly one line on stdout once the server takes connections:
#   URL PASSWORD_FILE
# (URL without a password, `postgres://ordersync@127.0.0.1:PORT/postgres`;
# the superuser's throwaway password is in PASSWORD_FILE; the server speaks
# TLS too, with ca.crt and other-ca.crt next to PASSWORD_FILE), then waits until
# its standard input is closed (the test process that started it ended,
# however it ended) and stops the server and removes the directory. By hand:
#   tests/postgres/cluster.sh      # Ctrl-D stops it
#
# Runs as root too (CI): initdb refuses root, so the server then runs as
# the `postgres` user the Debian package creates. Fails loudly, never skips.
set -euo pipefail
log() { printf 'postgres cluster: %s\n' "$*" >&2; }

bindir="${ORDERSYNC_PG_BIN:-}"
if [ -z "$bindir" ]; then
  # Debian: /usr/lib/postgresql/<major>/bin, the newest major first.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then bindir="$d"; break; fi
  done
fi
if [ -z "$bindir" ] && command -v pg_config >/dev/null 2>&1; then
  bindir="$(pg_config --bindir)"
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  log "no initdb found: install Debian's postgresql package (apt-get install postgresql) or set ORDERSYNC_PG_BIN"
  exit 1
fi

as_server=()
if [ "$(id -u)" -eq 0 ]; then
  if ! id postgres >/dev/null 2>&1; then
    log "running as root, and there is no postgres user to run the server as (initdb refuses root)"
    exit 1
  fi
  as_server=(runuser -u postgres --)
fi

dir="$(mktemp -d "${TMPDIR:-/tmp}/ordersync-pg.XXXXXX")"
cleanup() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
if [ "${#as_server[@]}" -gt 0 ]; then chown postgres "$dir"; fi
chmod 0700 "$dir"

password="test-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"   # throwaway, loopback only
printf '%s\n' "$password" > "$dir/password"
if [ "${#as_server[@]}" -gt 0 ]; then chown postgres "$dir/password"; fi

# TLS, as a real deployment has it: a throwaway CA (ca.crt) signs the
# server's certificate, made out to "localhost" only (not 127.0.0.1), so a
# test can tell verify-full from verify-ca. other-ca.crt signed nothing
# here. Both next to the password file.
tls_log="$dir/tls.log"
mkcert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3 \
    -subj "/CN=ordersync test CA $1" -keyout "$dir/$1.key" -out "$dir/$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
if ! {
  mkcert ca && mkcert other-ca &&
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" &&
  printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' > "$dir/server.ext" &&
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3 -extfile "$dir/server.ext" -out "$dir/server.crt"
} >"$tls_log" 2>&1; then
  log "could not make the test certificates (openssl: apt-get install openssl):"; cat "$tls_log" >&2; exit 1
fi
chmod 0600 "$dir/server.key"
if [ "${#as_server[@]}" -gt 0 ]; then chown postgres "$dir/server.key" "$dir/server.crt"; fi

# Local socket: trust; TCP: the password (SCRAM), as a real deployment has.
if ! "${as_server[@]}" "$bindir/initdb" -D "$dir/data" -U ordersync --pwfile="$dir/password" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$dir/initdb.log" 2>&1; then
  log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1
fi

started=""
for _ in 1 2 3 4 5 6 7 8; do
  port=$(( 20000 + RANDOM % 40000 ))
  # Something answers there already: try another port.
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
  # fsync off and no durability waits: a test cluster, thrown away after.
  if "${as_server[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c ssl=on -c ssl_cert_file=$dir/server.crt -c ssl_key_file=$dir/server.key" \
      start >/dev/null 2>&1; then
    started=1; break
  fi
  log "the server did not start on port $port; trying another"
done
if [ -z "$started" ]; then log "the server did not start:"; tail -30 "$dir/server.log" >&2; exit 1; fi

echo "postgres://ordersync@127.0.0.1:$port/postgres $dir/password"
# Until the test process ends (its end of our stdin closes).
cat >/dev/null || true
