#!/usr/bin/env bash
# Records real traffic between the end-to-end tests' peers into tests/data/captures/*.rec
# (`tracer run --record-events`: each raw ring-buffer record, u32-LE length first). The fuzz
# seeds are derived from these (xtask/src/seeds.rs). Test traffic only: no secrets.
#
#   sudo tests/data/captures/record.sh [AGENT]     AGENT defaults to target/ci/tracer
#
# Needs root (the agent loads its kernel programs), python3 with grpcio, curl and nghttpd
# (`cargo xtask setup` installs them).
set -euo pipefail
cd "$(dirname "$0")/../../.."
AGENT=$(realpath "${1:-target/ci/tracer}")
OUT=tests/data/captures
FIXTURES=tests/fixtures
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
TRACEPARENT="traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE="tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

# start NAME CMD...: runs CMD in the background until it prints "listening on PORT";
# sets PORT and PID.
start() {
    local name=$1
    shift
    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        PORT=$(sed -n 's/^listening on //p' "$TMP/$name.out")
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "$name did not start: $(cat "$TMP/$name.err")" >&2
    return 1
}

# agent NAME ARGS...: the agent recording into $OUT/NAME.rec, once it traces.
agent() {
    local name=$1
    shift
    "$AGENT" run --control-socket "$TMP/tracer.sock" --record-events "$OUT/$name.rec" "$@" \
        >"$TMP/agent.out" 2>"$TMP/agent.err" &
    AGENT_PID=$!
    for _ in $(seq 200); do
        grep -q "ready: tracing" "$TMP/agent.err" && return 0
        sleep 0.1
    done
    echo "agent did not start: $(cat "$TMP/agent.err")" >&2
    return 1
}

stop_agent() {
    sleep 1
    kill -INT "$AGENT_PID"
    wait "$AGENT_PID" || true
    chmod 0644 "$OUT/$1.rec"
    echo "$OUT/$1.rec: $(stat -c %s "$OUT/$1.rec") bytes; spans:"
    grep -E "^(trace| )" "$TMP/agent.out" | head -20 || true
}

traced() {
    "$AGENT" exec --control-socket "$TMP/tracer.sock" --service-name "$1" -- "${@:2}"
}

# HTTP/1: a frontend calling a backend over keep-alive connections, with and without a
# caller's trace context, and a failure.
start backend python3 "$FIXTURES/http_services.py" backend
BACKEND=$PORT BACKEND_PID=$PID
start frontend python3 "$FIXTURES/http_services.py" frontend \
    --backend "http://127.0.0.1:$BACKEND" --keep-alive --forward
FRONTEND=$PORT FRONTEND_PID=$PID
agent http1_services --pid "$FRONTEND_PID=frontend" --pid "$BACKEND_PID=backend"
curl -s -o /dev/null -H "$TRACEPARENT" -H "$TRACESTATE" "http://127.0.0.1:$FRONTEND/checkout/42"
curl -s -o /dev/null "http://127.0.0.1:$FRONTEND/fail"
curl -s -o /dev/null "http://127.0.0.1:$FRONTEND/checkout/7?coupon=x"
stop_agent http1_services

# HTTP/1 with vectored I/O: recvmsg/readv requests, sendmsg/writev responses whose bodies run
# past the capture, keep-alive, a POST body.
start vectored python3 "$FIXTURES/vectored_server.py"
agent http1_vectored --pid "$PID=vectored" --capture-bytes 1024
curl -s -o /dev/null -o /dev/null -o /dev/null "http://127.0.0.1:$PORT/v/1" \
    "http://127.0.0.1:$PORT/w/2" "http://127.0.0.1:$PORT/v/3"
head -c 3000 /dev/zero | tr '\0' 'b' | curl -s -o /dev/null --data-binary @- "http://127.0.0.1:$PORT/p/4"
stop_agent http1_vectored

# gRPC with grpcio on both ends: unary, server streaming, INTERNAL, a 64 KiB reply whose
# trailers lie past the capture.
start grpc python3 "$FIXTURES/grpc_services.py" server
agent grpc_grpcio --pid "$PID=greeter"
traced client python3 "$FIXTURES/grpc_services.py" client --target "127.0.0.1:$PORT" \
    --traceparent "${TRACEPARENT#traceparent: }" >/dev/null
stop_agent grpc_grpcio

# Plain HTTP/2: curl with prior knowledge against nghttpd, a page, a large file, a miss.
mkdir -p "$TMP/www/items"
echo "<h1>h2</h1>" >"$TMP/www/index.html"
head -c 30000 /dev/zero | tr '\0' 'x' >"$TMP/www/items/42"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nghttpd --no-tls -d "$TMP/www" "$PORT" >/dev/null 2>&1 &
NGHTTPD_PID=$!
PIDS+=("$NGHTTPD_PID")
sleep 0.5
agent http2_nghttpd --pid "$NGHTTPD_PID=nghttpd"
for path in /index.html /items/42 /missing; do
    traced curl curl -s -o /dev/null --http2-prior-knowledge "http://127.0.0.1:$PORT$path"
done
stop_agent http2_nghttpd

# nginx (one worker, keep-alive, a tiny response) under a wrk-like load: 4 keep-alive
# connections of 100 requests each. The pipeline benchmark replays it.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    server { listen 127.0.0.1:$PORT; location / { return 200 "ok\n"; } }
}
CONF
nginx -c "$TMP/nginx.conf" -p "$TMP" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
sleep 0.5
WORKER=$(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" | tr -d ' ')
agent http1_nginx --pid "$WORKER=nginx"
URLS=$(for i in $(seq 100); do printf 'http://127.0.0.1:%s/ ' "$PORT"; done)
CURLS=()
for _ in 1 2 3 4; do
    # shellcheck disable=SC2086
    curl -s $URLS >/dev/null &
    CURLS+=("$!")
done
wait "${CURLS[@]}"
stop_agent http1_nginx
