#!/usr/bin/env bash
# Installs every Debian package pg_inference needs to build, test and demo, when missing.
# Safe to run twice: it only calls apt-get when something is absent.
set -euo pipefail

PACKAGES=(
    postgresql-15 postgresql-client-15 postgresql-server-dev-15
    libpq-dev libcurl4-openssl-dev nlohmann-json3-dev libssl-dev libevent-dev
    libgtest-dev cmake g++ make pkg-config
    curl openssl ca-certificates procps bc wrk nginx python3-prometheus-client
    git debhelper dpkg-dev postgresql-server-dev-all
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The mock upstream and the SDK tests run on Node.js; any node >= 18 on PATH will do.
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs); fi
if ! command -v npm >/dev/null 2>&1; then missing+=(npm); fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "install-deps: all packages present"
