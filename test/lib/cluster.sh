# Throwaway PostgreSQL clusters for the demo and the tests. Sourced, not run.
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user in a
# directory that user owns.

PG_BINDIR="$(pg_config --bindir)"

as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# cluster_workdir PREFIX: prints a new directory /tmp/PREFIX.XXXXXX to hold clusters, mocks and
# logs. mktemp makes it private, but as root the server runs as postgres, which must reach the
# cluster directories inside it.
cluster_workdir() {
    local dir
    dir="$(mktemp -d "/tmp/$1.XXXXXX")" || return 1
    chmod 755 "$dir"
    echo "$dir"
}

# cluster_start DIR PORT [extra postgresql.conf lines...]
cluster_start() {
    local dir="$1" port="$2"
    shift 2
    mkdir -p "$dir"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
    as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 \
        --locale=C >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
    {
        echo "port = $port"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$dir'"
        echo "shared_preload_libraries = 'pg_inference'"
        echo "fsync = off"
        echo "log_line_prefix = '%m [%p] '"
        for line in "$@"; do echo "$line"; done
    } | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    cluster_pg_ctl "$dir" start
}

cluster_pg_ctl() {
    local dir="$1" action="$2"
    as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 "$action" >/dev/null
}

cluster_pid() { head -1 "$1/data/postmaster.pid" 2>/dev/null; }

# Stops the cluster by its postmaster pid; falls back to SIGKILL if a fast shutdown hangs.
cluster_stop() {
    local dir="$1" pid
    pid="$(cluster_pid "$dir")"
    [ -n "$pid" ] || return 0
    kill -INT "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# psql against a cluster: cluster_psql DIR PORT [psql args...]
cluster_psql() {
    local dir="$1" port="$2"
    shift 2
    psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"
}
