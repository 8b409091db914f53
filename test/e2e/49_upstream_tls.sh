#!/usr/bin/env bash
# Upstream TLS per service: an endpoint whose certificate a private CA signed is verified against
# ca_file; an endpoint that asks for a client certificate is reached with client_cert_file and
# client_key_file and refused without; only superusers set these paths; bad files change nothing;
# request_timeout cuts a slow upstream. The CA, certificates and two mocks are this script's own.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/test/lib/gateway.sh"
source "$ROOT/test/lib/mock.sh"
source "$ROOT/test/lib/standalone.sh"

psql_gw -c "CREATE EXTENSION IF NOT EXISTS pg_inference" >/dev/null
WORK="$(cluster_workdir pgi-tls)" || exit 1
CERTS="$WORK/certs-own"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    psql_gw >/dev/null 2>&1 <<'SQL'
SELECT inference.revoke_access_key('tls-tests');
DELETE FROM inference.access_key_store WHERE name = 'tls-tests';
SELECT inference.deregister_external_service(name) FROM inference.services WHERE name LIKE 'tls-%';
DROP ROLE IF EXISTS tls_admin;
SQL
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- a private CA, a server certificate and a client certificate it signs, a CA that signed
# nothing here, and a file that is no certificate
mkdir -p "$CERTS"
(
    cd "$CERTS" || exit 1
    ca() {
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=$1" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
            -keyout "$2.key" -out "$2.pem"
    }
    signed() {
        openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=$1" -keyout "$2.key" -out "$2.csr" &&
            printf '%s\n' "$3" >"$2.ext" &&
            openssl x509 -req -in "$2.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                -sha256 -extfile "$2.ext" -out "$2.pem"
    }
    ca "pg_inference test CA" ca &&
        ca "another CA" other-ca &&
        signed 127.0.0.1 server "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth" &&
        signed pg_inference client "extendedKeyUsage=clientAuth" &&
        echo "not a certificate" >garbage.pem
) >"$WORK/openssl.log" 2>&1 || {
    fail "tls: the test's CA and certificates are made" "$(tail -5 "$WORK/openssl.log")"
    exit 0
}
chmod 600 "$CERTS"/*.key
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$CERTS"

# --- two mocks: one serving the CA-signed certificate, one also asking for a client certificate
start_mock() {
    local dir="$WORK/$1" http_port tls_port
    shift
    mkdir -p "$dir"
    http_port="$(pick_port)" && tls_port="$(pick_port "$http_port")" || return 1
    mock_start "$dir" "$http_port" "$tls_port" --tls-cert "$CERTS/server.pem" \
        --tls-key "$CERTS/server.key" "$@" || return 1
    PIDS+=("$MOCK_PID")
    MOCK_PID=""
    echo "$tls_port $http_port" >"$dir/ports"
}
start_mock plain && start_mock mutual --tls-client-ca "$CERTS/ca.pem" ||
    { fail "tls: the test's mocks start"; exit 0; }
read -r PLAIN_TLS PLAIN_HTTP <"$WORK/plain/ports"
read -r MUTUAL_TLS MUTUAL_HTTP <"$WORK/mutual/ports"
PLAIN="https://127.0.0.1:$PLAIN_TLS"
MUTUAL="https://127.0.0.1:$MUTUAL_TLS"

sqlstate_of() {  # the SQLSTATE and message of a statement that fails, or "ok"
    psql_gw -At -v ON_ERROR_STOP=1 -c "\\set VERBOSITY verbose" -c "$1" 2>&1 >/dev/null |
        sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): /\1 /p;s/^HINT:  /HINT /p' | tr '\n' ' ' || true
}
service_count() { psql_gw -At -c "SELECT count(*) FROM inference.services WHERE name LIKE 'tls-%'"; }
files_of() {
    psql_gw -At -c "SELECT concat_ws(',', ca_file, client_cert_file, client_key_file)
                      FROM inference.services WHERE name = '$1'"
}

# --- a private CA
out="$(psql_gw -At -c "SELECT status FROM inference.register_external_service('tls-ca',
    'gpt-4o-mini', '$PLAIN/s/tlsca', api_key => 'sk-test-tls', ca_file => '$CERTS/ca.pem')" 2>&1)"
check_eq "tls: a service verified against its ca_file is Ready (no allow_insecure)" "Ready" "$out"
out="$(psql_gw -At -c "SELECT inference.chat('tls-ca', 'hello over TLS') IS NOT NULL" 2>&1)"
check_eq "tls: an SQL call reaches the private-CA endpoint" "t" "$out"

out="$(sqlstate_of "SELECT inference.register_external_service('tls-sys', 'gpt-4o-mini',
    '$PLAIN/s/tlssys', api_key => 'sk-test-tls')")"
check_contains "tls: without ca_file the system's store refuses the private CA" \
    "08001 service \"tls-sys\" failed its connectivity check: endpoint unreachable" "$out"
check_contains "tls: the hint for an unverified endpoint names ca_file" "ca_file =>" "$out"

before="$(service_count)"
out="$(sqlstate_of "SELECT inference.register_external_service('tls-wrong', 'gpt-4o-mini',
    '$PLAIN/s/tlswrong', api_key => 'sk-test-tls', ca_file => '$CERTS/other-ca.pem')")"
check_contains "tls: the wrong CA gives endpoint unreachable" "endpoint unreachable" "$out"
check_contains "tls: the wrong CA's hint names ca_file and its path" \
    "HINT Check that ca_file \"$CERTS/other-ca.pem\" holds the CA" "$out"
out="$(sqlstate_of "SELECT inference.update_external_service('tls-ca',
    ca_file => '$CERTS/other-ca.pem')")"
check_contains "tls: a change to the wrong CA is probed and refused" "endpoint unreachable" "$out"
check_eq "tls: a refused change keeps the service's files" "$CERTS/ca.pem" "$(files_of tls-ca)"
check_eq "tls: a refused registration stores nothing" "$before" "$(service_count)"

# --- client certificates
out="$(psql_gw -At -c "SELECT status FROM inference.register_external_service('tls-mutual',
    'gpt-4o-mini', '$MUTUAL/s/tlsmutual', api_key => 'sk-test-tls', ca_file => '$CERTS/ca.pem',
    client_cert_file => '$CERTS/client.pem', client_key_file => '$CERTS/client.key')" 2>&1)"
check_eq "tls: an endpoint asking for a client certificate is Ready with one" "Ready" "$out"
out="$(psql_gw -At -c "SELECT inference.chat('tls-mutual', 'hello with a certificate') IS NOT NULL" 2>&1)"
check_eq "tls: an SQL call presents the client certificate" "t" "$out"
out="$(sqlstate_of "SELECT inference.register_external_service('tls-nocert', 'gpt-4o-mini',
    '$MUTUAL/s/tlsnocert', api_key => 'sk-test-tls', ca_file => '$CERTS/ca.pem')")"
check_contains "tls: without a client certificate the endpoint refuses the handshake" \
    "endpoint unreachable" "$out"
check_contains "tls: the hint names client_cert_file" "client_cert_file" "$out"
out="$(sqlstate_of "SELECT inference.update_external_service('tls-mutual',
    client_cert_file => '', client_key_file => '')")"
check_contains "tls: removing the client certificate is probed and refused" \
    "endpoint unreachable" "$out"
check_eq "tls: the service keeps its client certificate" \
    "$CERTS/ca.pem,$CERTS/client.pem,$CERTS/client.key" "$(files_of tls-mutual)"
out="$(psql_gw -At -c "SELECT status FROM inference.check_service('tls-mutual')" 2>&1)"
check_eq "tls: the health check uses the service's files" "Ready" "$out"

# --- through the gateway's listeners
KEY="$(psql_gw -At -c "SELECT inference.create_access_key('tls-tests')")"
wait_for_key "$KEY" || fail "tls: the new key reaches the gateway"
for svc in tls-ca tls-mutual; do
    code="$(curl -s -o "$WORK/answer.json" -w '%{http_code}' "$GATEWAY_URL/v1/chat/completions" \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "{\"model\": \"$svc\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}")"
    check_eq "tls: the gateway reaches $svc over its TLS files" "200" "$code"
done
tls_seen="$(curl -s "http://127.0.0.1:$MUTUAL_HTTP/_mock/requests?label=tlsmutual" |
    node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>{const r=JSON.parse(d);
        console.log(r.length > 0 && r.every(x => x.tls) ? "all tls" : "not all tls: " + d.slice(0, 200))})')"
check_eq "tls: every request to the mutual-TLS mock came over TLS" "all tls" "$tls_seen"

# --- who may set the files, and bad files
psql_gw >/dev/null <<'SQL'
CREATE ROLE tls_admin LOGIN;
GRANT inference_admin TO tls_admin;
SQL
out="$(sqlstate_of "SET ROLE tls_admin; SELECT inference.register_external_service('tls-nosu',
    'gpt-4o-mini', '$PLAIN/s/tlsnosu', api_key => 'sk-test-tls', ca_file => '$CERTS/ca.pem')")"
check_contains "tls: a non-superuser setting ca_file gets 42501" "42501 only superusers may set" "$out"
out="$(sqlstate_of "SET ROLE tls_admin; SELECT inference.update_external_service('tls-ca',
    ca_file => '')")"
check_contains "tls: a non-superuser cannot change ca_file either" "42501" "$out"
out="$(psql_gw -At -c "SET ROLE tls_admin" -c "SELECT count(*) FROM inference.update_external_service('tls-ca',
    tags => '{private-ca}')" 2>&1)"
check_eq "tls: a non-superuser still changes the service's other fields" "1" "$out"

before="$(service_count)"
bad() {  # NAME ARGS EXPECTED
    local out
    out="$(sqlstate_of "SELECT inference.register_external_service('tls-bad', 'gpt-4o-mini',
        '$PLAIN/s/tlsbad', api_key => 'sk-test-tls', $2)")"
    check_contains "tls: $1" "$3" "$out"
}
bad "a missing ca_file is refused" "ca_file => '$CERTS/none.pem'" \
    "22023 ca_file \"$CERTS/none.pem\" cannot be read: No such file or directory"
bad "a relative ca_file is refused" "ca_file => 'ca.pem'" "22023 ca_file \"ca.pem\" is not an absolute path"
bad "a ca_file that does not parse is refused" "ca_file => '$CERTS/garbage.pem'" \
    "22023 ca_file \"$CERTS/garbage.pem\" holds no PEM certificate"
bad "a client certificate without its key is refused" "client_cert_file => '$CERTS/client.pem'" \
    "22023 client_cert_file and client_key_file go together"
bad "a key that is not the certificate's is refused" \
    "client_cert_file => '$CERTS/client.pem', client_key_file => '$CERTS/server.key'" \
    "22023 client_key_file \"$CERTS/server.key\" is not the key of client_cert_file"
bad "a key file that holds no key is refused" \
    "client_cert_file => '$CERTS/client.pem', client_key_file => '$CERTS/client.pem'" \
    "holds no unencrypted PEM private key"
check_eq "tls: bad files register nothing" "$before" "$(service_count)"
out="$(psql_gw -c "\\set VERBOSITY verbose" -c "SELECT inference.update_external_service('tls-ca',
    ca_file => '$CERTS/garbage.pem')" 2>&1)"
check_not_contains "tls: an error never shows a file's contents" "not a certificate" "$out"

# --- request_timeout on a slow upstream (the mock's hang scenario never answers)
psql_gw -c "ALTER SYSTEM SET inference.max_retries = 0" -c "SELECT pg_reload_conf()" >/dev/null
psql_gw -At -c "SELECT inference.register_external_service('tls-hang', 'gpt-4o-mini',
    '$PLAIN/s/hang', api_key => 'sk-test-tls', ca_file => '$CERTS/ca.pem', validate => false,
    request_timeout => '1 second')" >/dev/null
start=$(date +%s%N)
out="$(psql_gw -At -c "SELECT inference.chat('tls-hang', 'never answered')" 2>&1)"
ms=$((($(date +%s%N) - start) / 1000000))
check_contains "tls: request_timeout cuts a silent upstream" "timed out" "$out"
check "tls: the cut comes after 1 s, not the default 2 minutes (took ${ms} ms)" \
    test "$ms" -ge 1000 -a "$ms" -lt 30000
psql_gw -c "ALTER SYSTEM RESET inference.max_retries" -c "SELECT pg_reload_conf()" >/dev/null
