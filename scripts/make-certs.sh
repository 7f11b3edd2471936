#!/usr/bin/env bash
# Makes a test CA and certificates for amber's gRPC services with mutual
# TLS: one certificate per name given (the controller, each agent, each
# amberctl user), all signed by the same CA. For the local demo and tests;
# on a testbed use your own PKI (README, "Deploying on a testbed").
#
#   scripts/make-certs.sh DIR NAME [NAME...]
#
# Writes DIR/ca.pem (the CA certificate), DIR/ca.key, and for each NAME
# DIR/NAME.pem and DIR/NAME.key. Every certificate is valid for the DNS
# names NAME and localhost and the address 127.0.0.1, for 30 days, both as
# a server and as a client. A NAME containing a dot is also a DNS name
# (dn1.testbed.example). Existing files are kept: run it again to add names.
set -euo pipefail

if [ $# -lt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  [ $# -ge 2 ] || exit 2
  exit 0
fi
command -v openssl >/dev/null || { echo "make-certs: openssl is missing" >&2; exit 1; }
dir=$1
shift
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=amber test CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
fi
for name in "$@"; do
  case "$name" in
    *[!A-Za-z0-9._-]*|'') echo "make-certs: '$name': use letters, digits, '.', '_', '-'" >&2; exit 2 ;;
  esac
  [ -f "$dir/$name.pem" ] && continue
  ext=$(mktemp)
  trap 'rm -f "$ext"' EXIT
  printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
    "$name" > "$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 30 -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
done
chmod 0644 "$dir"/*.pem
echo "make-certs: CA and certificates for $* in $dir"
