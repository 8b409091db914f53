#!/bin/sh
# Creates a self-signed certificate for the mock upstream's HTTPS port:
#   OUTDIR/mock_cert.pem, OUTDIR/mock_key.pem
# CN=127.0.0.1 with subjectAltName IP:127.0.0.1 and DNS:localhost, so clients verify it against
# either name when given the certificate itself as their CA (curl --cacert OUTDIR/mock_cert.pem).
# Idempotent: keeps existing files, so parallel test runs can share one directory.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
cert="$out/mock_cert.pem"
key="$out/mock_key.pem"

if [ -s "$cert" ] && [ -s "$key" ]; then
    echo "$cert"
    exit 0
fi
mkdir -p "$out"

# Write under temporary names and rename, so a concurrent reader never sees half a file.
tmp_cert="$cert.tmp.$$"
tmp_key="$key.tmp.$$"
trap 'rm -f "$tmp_cert" "$tmp_key"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$tmp_key" -out "$tmp_cert" 2>/dev/null
chmod 600 "$tmp_key"
mv "$tmp_key" "$key"
mv "$tmp_cert" "$cert"
echo "$cert"
