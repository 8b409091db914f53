#!/usr/bin/env bash
# `make installcheck`: the pg_regress suite against the running server that PGHOST/PGPORT name.
# The tests talk to the mock upstream on 127.0.0.1:18181 (and 18182 for TLS; the expected
# outputs quote its URLs): the test command's mock when it runs, else one this starts for the
# run and stops at the end, by pid. Its addresses reach the tests as the settings pgi_test.mock
# and pgi_test.mock_tls, through PGOPTIONS. The server must preload the library and have
# PGI_TEST_KEY_ENV=sk-test-from-env in its environment (a key given as env:PGI_TEST_KEY_ENV); the
# README's Tests section shows how to start one in two lines.
#   test/regress.sh PG_REGRESS BINDIR [pg_regress options and tests...]
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PG_REGRESS="$1" BINDIR="$2"
shift 2
source "$ROOT/test/lib/mock.sh"

need() { echo "make installcheck: $1"; exit 1; }
command -v node >/dev/null || need "the tests' mock upstream needs Node.js (apt-get install nodejs)"
preload="$("$BINDIR/psql" -X -At -d postgres -c 'SHOW shared_preload_libraries' 2>&1)" ||
    need "no server to test at ${PGHOST:-the default socket}:${PGPORT:-5432}: $preload"
case ",$preload," in
    *pg_inference*) ;;
    *) need "the server must preload the library: shared_preload_libraries = 'pg_inference' (README: Tests)" ;;
esac

port=18181 tls_port=18182
if ! curl -s -o /dev/null "http://127.0.0.1:$port/_mock/stats"; then
    port_is_free "$port" && port_is_free "$tls_port" ||
        need "ports $port and $tls_port, which the tests' mock upstream needs, are taken by something else"
    WORK="$(mktemp -d /tmp/pgi-regress.XXXXXX)"
    trap 'mock_stop; rm -rf "$WORK"' EXIT
    mock_start "$WORK" "$port" "$tls_port" || need "the mock upstream did not start"
fi
export PGOPTIONS="${PGOPTIONS:-} -c pgi_test.mock=http://127.0.0.1:$port -c pgi_test.mock_tls=https://127.0.0.1:$tls_port"
"$PG_REGRESS" --inputdir="$ROOT" --bindir="$BINDIR" "$@"
