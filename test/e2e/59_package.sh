#!/usr/bin/env bash
# The Debian package: dpkg-buildpackage builds postgresql-15-pg-inference from this tree with
# pg_buildext, dpkg -i installs it on this machine, and the pg_regress suite passes against a
# server running the installed files. Then the package is removed and the tree's own build put
# back, as the other tests expect it.
#
# The package is built from a copy of the tree that keeps the objects this test run has already
# compiled (dpkg-buildpackage -nc skips the clean that would throw them away), so that the test
# costs seconds rather than a second full build; `dpkg-buildpackage -us -uc -b` on a clean tree
# builds the same package from scratch.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/cluster.sh"
source "$ROOT/test/lib/check.sh"
source "$ROOT/test/lib/mock.sh"

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP installing a package needs root (the test command runs as root in CI)"
    exit 0
fi
PACKAGE="postgresql-$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')-pg-inference"
W="$TEST_WORK/package"
mkdir -p "$W/pg-inference"
was_installed=""
dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null | grep -q "install ok installed" && was_installed=1
D="$W/pg"
restore() {
    cluster_stop "$D"
    if [ -z "$was_installed" ]; then
        dpkg -r "$PACKAGE" >/dev/null 2>&1
        (cd "$ROOT" && PGI_TESTS_LOCK_HELD=1 bash scripts/build-install.sh) >/dev/null 2>&1
    fi
}
trap restore EXIT

(cd "$ROOT" && {
    git ls-files -co --exclude-standard -z
    find src -name '*.o' -print0
    [ -d .deps ] && find .deps -type f -print0
    for f in pg_inference.so sql/pg_inference--*--*.sql; do [ -f "$f" ] && printf '%s\0' "$f"; done
} | tar --null -T - -cf -) | tar -x -C "$W/pg-inference"
(cd "$W/pg-inference" && dpkg-buildpackage -us -uc -b -nc) >"$W/build.log" 2>&1
build_rc=$?
deb="$(ls "$W/${PACKAGE}"_*.deb 2>/dev/null | head -1)"
check_eq "dpkg-buildpackage -us -uc -b builds $PACKAGE" "0 yes" "$build_rc $([ -n "$deb" ] && echo yes)"
[ -n "$deb" ] || { tail -20 "$W/build.log"; exit 0; }
contents="$(dpkg -c "$deb")"
for f in lib/pg_inference.so extension/pg_inference.control extension/pg_inference--0.2.0.sql \
         extension/pg_inference--0.1.0.sql extension/pg_inference--0.1.0--0.2.0.sql; do
    check_contains "the package holds $f" "$f" "$contents"
done

check "dpkg -i installs it" dpkg -i "$deb"
check_eq "the server's library is now the package's" "$PACKAGE" \
    "$(dpkg -S "$(pg_config --pkglibdir)/pg_inference.so" 2>/dev/null | cut -d: -f1)"

port="$(free_port "" "$PG_PORT" "$GATEWAY_PORT")"
gw_port="$(free_port "" "$PG_PORT" "$GATEWAY_PORT" "$port")"
PGI_TEST_KEY_ENV=sk-test-from-env cluster_start "$D" "$port" "inference.gateway_port = $gw_port" ||
    { fail "a server starts on the installed package"; exit 0; }
check_installcheck "the regress suite passes against the installed files" "$D" "$port"
