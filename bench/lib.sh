# Shared by bench/run and the server control scripts: where things live, the ports, and
# small helpers. Sourced, not run.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$BENCH_DIR")"
# Every server's data, logs and configuration are written under here, wiped at each start.
WORK_DIR="${BENCH_WORK:-/tmp/herald-bench}"

DOMAIN=localhost
COMPONENT_DOMAIN=push.localhost
COMPONENT_SECRET=bench-secret

# c2s and component (XEP-0114) ports, on 127.0.0.1 only. herald-pg is herald on PostgreSQL
# (bench/herald/ctl with HERALD_ENGINE=postgres), herald-mam herald with the message archive
# (HERALD_ARCHIVE=on): the same ports, never run at the same time.
c2s_port() {
    case "$1" in herald | herald-pg | herald-mam) echo 15222 ;; prosody) echo 25222 ;; ejabberd) echo 35222 ;; esac
}
component_port() {
    case "$1" in herald | herald-pg | herald-mam) echo 15275 ;; prosody) echo 25275 ;; ejabberd) echo 35275 ;; esac
}

# wait_port PORT SECONDS: until something listens on 127.0.0.1:PORT.
wait_port() {
    local port=$1 limit=$2 waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        sleep 0.2
        waited=$((waited + 1))
        if [ "$waited" -ge $((limit * 5)) ]; then
            return 1
        fi
    done
}

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# make_cert DIR: a self-signed ECDSA P-256 certificate for the benchmark domains (the kind
# herald generates for itself), as DIR/cert.pem and DIR/key.pem.
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -subj "/CN=$DOMAIN" -addext "subjectAltName=DNS:$DOMAIN,DNS:$COMPONENT_DOMAIN" \
        -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
}

# stop_pid PIDFILE SECONDS: TERM the recorded process, then KILL it if it is still there.
stop_pid() {
    local pidfile=$1 limit=$2 pid waited=0
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt $((limit * 5)) ]; do
            sleep 0.2
            waited=$((waited + 1))
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
}

# Raise the open-file limit to the hard limit: each session is a socket on both sides.
raise_fd_limit() {
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}
