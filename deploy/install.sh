#!/usr/bin/env bash
# Installs (or upgrades) ordersync as a systemd service. Safe to run again.
#
#   deploy/install.sh [--binary PATH] [--root DIR]     install or upgrade
#   deploy/install.sh --uninstall [--purge] [--root DIR]
#
# --root installs under another root (for packaging and tests); the user is
# then not created and systemctl is not called. --uninstall keeps the ledger
# (/var/lib/ordersync) and the config unless --purge is given.
# The unit's LoadCredential= lines are derived from the config (the drop-in
# ordersync.service.d/credentials.conf) each time this runs.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
root=""
binary="$here/target/release/ordersync"
action=install
purge=no
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=yes; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

bin_dir="$root/usr/local/bin"
unit_dir="$root/etc/systemd/system"
drop_in_dir="$unit_dir/ordersync.service.d"
doc_dir="$root/usr/local/share/doc/ordersync"
conf_dir="$root/etc/ordersync"
cred_dir="$conf_dir/credentials"
state_dir="$root/var/lib/ordersync"
live_system() { [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

if [ "$action" = uninstall ]; then
  live_system && systemctl disable --now ordersync.service 2>/dev/null || true
  rm -f "$bin_dir/ordersync" "$unit_dir/ordersync.service" "$drop_in_dir/credentials.conf"
  rmdir "$drop_in_dir" 2>/dev/null || true
  rm -rf "$doc_dir"
  live_system && systemctl daemon-reload || true
  if [ "$purge" = yes ]; then
    rm -rf "$conf_dir" "$state_dir"
    echo "ordersync removed, with its config and ledger"
  else
    echo "ordersync removed; kept $conf_dir and $state_dir (--purge removes them)"
  fi
  exit 0
fi

if [ ! -x "$binary" ]; then
  echo "install.sh: no binary at $binary (build it: cargo build --release, or pass --binary)" >&2
  exit 1
fi

if [ -z "$root" ] && ! id ordersync >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/ordersync --no-create-home --shell /usr/sbin/nologin ordersync
fi

install -d -m 0755 "$bin_dir" "$unit_dir" "$drop_in_dir" "$doc_dir"
install -d -m 0750 "$conf_dir"
install -d -m 0700 "$cred_dir" "$state_dir"
install -m 0755 "$binary" "$bin_dir/ordersync"
# The unit names the packaged paths (/usr/bin, /usr/share/doc); this script
# installs to /usr/local.
sed -e 's|^ExecStart=/usr/bin/ordersync|ExecStart=/usr/local/bin/ordersync|' \
  -e '/^Documentation=/s|/usr/share/doc/|/usr/local/share/doc/|g' \
  "$here/systemd/ordersync.service" > "$unit_dir/ordersync.service"
chmod 0644 "$unit_dir/ordersync.service"
install -m 0644 "$here/README.md" "$here/docs/OPERATIONS.md" "$here/docs/erp-http-contract.md" "$doc_dir/"
# The config is the operator's: never overwrite it on upgrade.
if [ ! -e "$conf_dir/ordersync.toml" ]; then
  install -m 0640 "$here/config/ordersync.example.toml" "$conf_dir/ordersync.toml"
  fresh=yes
else
  fresh=no
fi
install -m 0644 "$here/config/ordersync.example.toml" "$conf_dir/ordersync.example.toml"
if [ -z "$root" ]; then
  chown -R ordersync:ordersync "$state_dir"
  chown root:ordersync "$conf_dir" "$conf_dir/ordersync.toml"
fi

# The unit loads exactly the credentials the config names: derive the lines
# from the config with the binary just installed. A config it cannot read
# keeps the drop-in there was (check-config names the problem).
drop_in="$drop_in_dir/credentials.conf"
if lines="$("$bin_dir/ordersync" --config "$conf_dir/ordersync.toml" check-config --unit-credentials)" \
  && printf '%s\n' "$lines" | grep -qx '\[Service\]'; then
  printf '%s\n' "$lines" > "$drop_in.new"
  chmod 0644 "$drop_in.new"
  mv "$drop_in.new" "$drop_in"
else
  echo "install.sh: could not derive the unit's credentials from $conf_dir/ordersync.toml;" >&2
  echo "            kept $drop_in as it was (run check-config to see why)" >&2
fi
credential_names="$(sed -n 's/^LoadCredential=\([^:]*\):.*/\1/p' "$drop_in" 2>/dev/null | tr '\n' ' ' | sed 's/ $//')"
live_system && systemctl daemon-reload || true

cfg=/etc/ordersync/ordersync.toml
echo "ordersync installed: $bin_dir/ordersync, $unit_dir/ordersync.service (+ ordersync.service.d/credentials.conf)"
if [ "$fresh" = yes ]; then
  echo "next: 1. edit $cfg (it is the example: keep the sources you have)"
  echo "      2. if that changed which secrets it names, derive the unit's credentials again:"
  echo "           ordersync --config $cfg check-config --unit-credentials > /etc/systemd/system/ordersync.service.d/credentials.conf"
  echo "           systemctl daemon-reload        (or run this script again)"
  echo "      3. put each secret in /etc/ordersync/credentials/<name> (root, mode 0600); now named:"
  echo "           ${credential_names:-(none)}"
  echo "      4. as root: ordersync --config $cfg check-config --credentials-from-unit"
  echo "      5. systemctl enable --now ordersync"
else
  echo "upgrade: kept your $conf_dir/ordersync.toml; the unit loads the credentials it names:"
  echo "           ${credential_names:-(none)}"
  echo "         'systemctl restart ordersync' to use the new binary"
fi
