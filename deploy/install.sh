#!/usr/bin/env bash
# Installs (or upgrades) ordersync as a systemd service. Safe to run again.
#
#   deploy/install.sh [--binary PATH] [--root DIR]     install or upgrade
#   deploy/install.sh --uninstall [--purge] [--root DIR]
#
# --root installs under another root (for packaging and tests); the user is
# then not created and systemctl is not called. --uninstall keeps the ledger
# (/var/lib/ordersync) and the config unless --purge is given.
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
conf_dir="$root/etc/ordersync"
cred_dir="$conf_dir/credentials"
state_dir="$root/var/lib/ordersync"
live_system() { [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; }

if [ "$action" = uninstall ]; then
  live_system && systemctl disable --now ordersync.service 2>/dev/null || true
  rm -f "$bin_dir/ordersync" "$unit_dir/ordersync.service"
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

install -d -m 0755 "$bin_dir" "$unit_dir"
install -d -m 0750 "$conf_dir"
install -d -m 0700 "$cred_dir" "$state_dir"
install -m 0755 "$binary" "$bin_dir/ordersync"
# The unit names the packaged path (/usr/bin); this script installs to /usr/local/bin.
sed 's|^ExecStart=/usr/bin/ordersync|ExecStart=/usr/local/bin/ordersync|' \
  "$here/systemd/ordersync.service" > "$unit_dir/ordersync.service"
chmod 0644 "$unit_dir/ordersync.service"
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
live_system && systemctl daemon-reload || true

echo "ordersync installed: $bin_dir/ordersync, $unit_dir/ordersync.service"
if [ "$fresh" = yes ]; then
  echo "next: edit $conf_dir/ordersync.toml, put secrets in $cred_dir (mode 0600),"
  echo "      run 'ordersync --config /etc/ordersync/ordersync.toml check-config',"
  echo "      then 'systemctl enable --now ordersync'"
else
  echo "upgrade: kept your $conf_dir/ordersync.toml; 'systemctl restart ordersync' to use the new binary"
fi
