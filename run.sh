#!/usr/bin/env bash
# Builds AddOnEvents and runs it on this machine: a private RabbitMQ node, jongodb, the three
# services and one demo app, all on 127.0.0.1. Ctrl+C stops everything this script started.
#
# Environment settings:
#   INGRESS_PORT (5080), KEYWORKER_PORT (5081), PROMPTWORKER_PORT (5082)  HTTP ports of the services
#   UPSTREAM_BASE_URL  sets Upstream__BaseUrl (the services default to https://api.openai.com/)
#   FAKE_UPSTREAM_PORT  starts the benchmark's fake OpenAI-compatible server on this port, accepting any key,
#                       and points the workers at it; FAKE_UPSTREAM_LATENCY_MS (0) delays each of its responses
#   READY_TIMEOUT_SECONDS (120)  seconds each service may take until /health/ready returns 200
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO"
# shellcheck source=scripts/infra.sh
source scripts/infra.sh

infra_dotnet_defaults

INGRESS_PORT=${INGRESS_PORT:-5080}
KEYWORKER_PORT=${KEYWORKER_PORT:-5081}
PROMPTWORKER_PORT=${PROMPTWORKER_PORT:-5082}
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-120}
FAKE_UPSTREAM_PORT=${FAKE_UPSTREAM_PORT:-}
FAKE_UPSTREAM_LATENCY_MS=${FAKE_UPSTREAM_LATENCY_MS:-0}
FAKE_UPSTREAM_DLL=bench/AddOnEvents.Bench/bin/Release/net10.0/AddOnEvents.Bench.dll
RUN_DIR=$REPO/.run/local
SERVICES=(Ingress KeyWorker PromptWorker)

fail() {
    printf 'run.sh: error: %s\n' "$*" >&2
    exit 1
}

service_port() {
    case $1 in
        Ingress) echo "$INGRESS_PORT" ;;
        KeyWorker) echo "$KEYWORKER_PORT" ;;
        PromptWorker) echo "$PROMPTWORKER_PORT" ;;
    esac
}


# Stops the services recorded in DIR (this run's, or those of an earlier run that was killed).
stop_services() {
    local dir=$1 name pid
    local stoppers=()
    for name in "${SERVICES[@]}"; do
        pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
        if infra_pid_alive "$pid" "AddOnEvents.$name.dll"; then
            echo "Stopping $name (pid $pid)"
            # ASP.NET Core shuts down gracefully on SIGTERM. Stopping the three at once saves time.
            infra_terminate "$pid" 15 "AddOnEvents.$name.dll" &
            stoppers+=($!)
        fi
        rm -f "$dir/$name.pid"
    done
    if ((${#stoppers[@]} > 0)); then
        wait "${stoppers[@]}"
    fi
}

# Starts the fake upstream when FAKE_UPSTREAM_PORT is set, and waits until it prints its address.
start_fake_upstream() {
    [[ -n $FAKE_UPSTREAM_PORT ]] || return 0
    local log=$RUN_DIR/fake-upstream.log deadline=$((SECONDS + 30))
    dotnet "$FAKE_UPSTREAM_DLL" fake-upstream --port "$FAKE_UPSTREAM_PORT" --accept-any-key \
        --latency-ms "$FAKE_UPSTREAM_LATENCY_MS" >"$log" 2>&1 &
    echo $! >"$RUN_DIR/fake-upstream.pid"
    until grep -q '^FAKE_UPSTREAM_URL=' "$log"; do
        kill -0 "$(cat "$RUN_DIR/fake-upstream.pid")" 2>/dev/null || fail "the fake upstream exited: $(tail -n 3 "$log")"
        ((SECONDS < deadline)) || fail "the fake upstream did not start within 30 s; see $log"
        sleep 0.2
    done
    UPSTREAM_BASE_URL=http://127.0.0.1:$FAKE_UPSTREAM_PORT/
    echo "Started the fake upstream (pid $(cat "$RUN_DIR/fake-upstream.pid")) on $UPSTREAM_BASE_URL"
}

stop_fake_upstream() {
    local pid
    pid=$(cat "$1/fake-upstream.pid" 2>/dev/null || true)
    if infra_pid_alive "$pid" AddOnEvents.Bench.dll; then
        echo "Stopping the fake upstream (pid $pid)"
        infra_terminate "$pid" 5 AddOnEvents.Bench.dll
    fi
    rm -f "$1/fake-upstream.pid"
}

stop_all() {
    set +e
    trap - EXIT INT TERM
    stop_services "$RUN_DIR"
    stop_fake_upstream "$RUN_DIR"
    infra_stop_jongodb "$RUN_DIR/jongodb"
    infra_stop_rabbitmq "$RUN_DIR/rabbitmq"
    rm -f "$RUN_DIR/run.pid"
    echo "Stopped. Logs are in $RUN_DIR"
}

start_service() {
    local name=$1 port
    port=$(service_port "$name")
    local dll=bin/Release/net10.0/AddOnEvents.$name.dll
    [[ -f src/$name/$dll ]] || fail "src/$name/$dll not found after the build"
    infra_start_service "$name" "$port" "$RUN_DIR"
    echo "Started $name (pid $(cat "$RUN_DIR/$name.pid")) on http://127.0.0.1:$port"
}

wait_until_ready() {
    local name=$1 port pid log code
    port=$(service_port "$name")
    pid=$(cat "$RUN_DIR/$name.pid")
    log=$RUN_DIR/$name.log
    local url=http://127.0.0.1:$port/health/ready
    local deadline=$((SECONDS + READY_TIMEOUT_SECONDS))
    while true; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [[ $code == 200 ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Last lines of $log:" >&2
            tail -n 20 "$log" >&2
            fail "$name exited before $url returned 200; see $log"
        fi
        if ((SECONDS >= deadline)); then
            fail "$name did not return 200 on $url within $READY_TIMEOUT_SECONDS s (last status: $code); see $log"
        fi
        sleep 0.5
    done
}

json_field() {
    node -e 'const o = JSON.parse(require("fs").readFileSync(0, "utf8")); process.stdout.write(String(o[process.argv[1]] ?? ""));' "$1"
}

create_demo_app() {
    local response status body
    # The admin token goes in on stdin so it does not show up in the process list.
    # shellcheck disable=SC2154 # infra_secrets exports Auth__AdminToken.
    response=$(printf 'Authorization: Bearer %s\n' "$Auth__AdminToken" |
        curl -sS --max-time 10 -w '\n%{http_code}' -X POST -H @- \
            -H 'Content-Type: application/json' --data '{"name":"Demo"}' \
            "http://127.0.0.1:$INGRESS_PORT/api/admin/apps") ||
        fail "POST /api/admin/apps to Ingress failed; see $RUN_DIR/Ingress.log"
    status=${response##*$'\n'}
    body=${response%$'\n'*}
    [[ $status == 201 ]] || fail "POST /api/admin/apps returned HTTP $status ($body); see $RUN_DIR/Ingress.log"
    DEMO_APP_ID=$(json_field appId <<<"$body")
    DEMO_APP_SECRET=$(json_field appSecret <<<"$body")
    [[ -n $DEMO_APP_ID && -n $DEMO_APP_SECRET ]] || fail "POST /api/admin/apps returned no appId or appSecret"
}

# The demo host backend in Ingress (POST /demo/token) issues end-user tokens with the demo app's credentials,
# which exist only once Ingress has created the app, so Ingress restarts with them.
restart_ingress_for_demo_app() {
    infra_terminate "$(cat "$RUN_DIR/Ingress.pid")" 15 AddOnEvents.Ingress.dll
    Demo__AppId=$DEMO_APP_ID Demo__AppSecret=$DEMO_APP_SECRET start_service Ingress
    wait_until_ready Ingress
}

# Checks the settings before anything of the previous run is stopped or deleted.
check_port_setting() {
    local name=$1 value=$2
    if [[ ! $value =~ ^[0-9]{1,5}$ ]] || ((10#$value < 1 || 10#$value > 65535)); then
        fail "$name must be a port number from 1 to 65535, not '$value'"
    fi
}
check_port_setting INGRESS_PORT "$INGRESS_PORT"
check_port_setting KEYWORKER_PORT "$KEYWORKER_PORT"
check_port_setting PROMPTWORKER_PORT "$PROMPTWORKER_PORT"
ports=("$INGRESS_PORT" "$KEYWORKER_PORT" "$PROMPTWORKER_PORT")
if [[ -n $FAKE_UPSTREAM_PORT ]]; then
    check_port_setting FAKE_UPSTREAM_PORT "$FAKE_UPSTREAM_PORT"
    [[ -z ${UPSTREAM_BASE_URL:-} ]] || fail "set UPSTREAM_BASE_URL or FAKE_UPSTREAM_PORT, not both"
    [[ $FAKE_UPSTREAM_LATENCY_MS =~ ^[0-9]+$ ]] ||
        fail "FAKE_UPSTREAM_LATENCY_MS must be a whole number of milliseconds, not '$FAKE_UPSTREAM_LATENCY_MS'"
    ports+=("$FAKE_UPSTREAM_PORT")
fi
if (($(printf '%s\n' "${ports[@]}" | sed 's/^0*//' | sort -u | wc -l) < ${#ports[@]})); then
    fail "INGRESS_PORT, KEYWORKER_PORT, PROMPTWORKER_PORT and FAKE_UPSTREAM_PORT must differ (now ${ports[*]})"
fi
[[ $READY_TIMEOUT_SECONDS =~ ^[0-9]+$ ]] || fail "READY_TIMEOUT_SECONDS must be a whole number of seconds, not '$READY_TIMEOUT_SECONDS'"

# A second run.sh on the same folder would stop the first one's servers below.
if [[ -f $RUN_DIR/run.pid ]]; then
    previous=$(cat "$RUN_DIR/run.pid")
    if [[ $previous != "$$" ]] && infra_pid_alive "$previous" run.sh; then
        fail "another run.sh (pid $previous) is using $RUN_DIR; stop it with Ctrl+C first"
    fi
fi
# Stops what an earlier run left behind when it was killed before its cleanup ran.
stop_services "$RUN_DIR"
stop_fake_upstream "$RUN_DIR"
infra_stop_jongodb "$RUN_DIR/jongodb"
infra_stop_rabbitmq "$RUN_DIR/rabbitmq"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
echo "$$" >"$RUN_DIR/run.pid"
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for name in "${SERVICES[@]}"; do
    port=$(service_port "$name")
    if infra_port_in_use "$port"; then
        fail "port $port on 127.0.0.1 (for $name) is in use; stop what listens there or set ${name^^}_PORT"
    fi
done
if [[ -n $FAKE_UPSTREAM_PORT ]] && infra_port_in_use "$FAKE_UPSTREAM_PORT"; then
    fail "port $FAKE_UPSTREAM_PORT on 127.0.0.1 (for the fake upstream) is in use; set another FAKE_UPSTREAM_PORT"
fi

started=$SECONDS
infra_install
infra_install_ingress_npm
dotnet build -c Release AddOnEvents.sln
echo "Install and build took $((SECONDS - started)) s"

started=$SECONDS
rabbitmq_port=$(infra_free_rabbitmq_port)
infra_start_rabbitmq "$RUN_DIR/rabbitmq" "$rabbitmq_port"
infra_start_jongodb "$RUN_DIR/jongodb"
start_fake_upstream
infra_secrets "$RUN_DIR"
infra_env
# The local run serves plain HTTP on 127.0.0.1, so Ingress must accept API calls without HTTPS.
export Ingress__RequireHttps=false
if [[ -n ${UPSTREAM_BASE_URL:-} ]]; then
    export Upstream__BaseUrl=$UPSTREAM_BASE_URL
fi

for name in "${SERVICES[@]}"; do
    start_service "$name"
done
for name in "${SERVICES[@]}"; do
    wait_until_ready "$name"
done
echo "Infrastructure and services ready in $((SECONDS - started)) s"
create_demo_app
restart_ingress_for_demo_app

cat <<EOF

AddOnEvents is running. Press Ctrl+C to stop it.
  Developer console:  http://127.0.0.1:$INGRESS_PORT/console.html
  Demo add-on page:   http://127.0.0.1:$INGRESS_PORT/addon.html
  Host page demo:     http://127.0.0.1:$INGRESS_PORT/host.html
  Demo app id:        $DEMO_APP_ID
  Demo app secret:    $DEMO_APP_SECRET
  Admin token:        $Auth__AdminToken  (generated for this run only)
  RabbitMQ:           node $INFRA_RABBITMQ_NODE, amqp://127.0.0.1:$INFRA_RABBITMQ_PORT, management http://127.0.0.1:$INFRA_RABBITMQ_MGMT_PORT/ (guest/guest)
  MongoDB (jongodb):  ${MONGO_URI%/*}/addonevents
  Upstream:           ${Upstream__BaseUrl:-https://api.openai.com/}
  Logs:               $RUN_DIR
EOF

watched=()
names=()
for name in "${SERVICES[@]}"; do
    watched+=("$(cat "$RUN_DIR/$name.pid")")
    names+=("$name")
done
watched+=("$(cat "$RUN_DIR/jongodb/jongodb.pid")")
names+=(jongodb)
if [[ -n $FAKE_UPSTREAM_PORT ]]; then
    watched+=("$(cat "$RUN_DIR/fake-upstream.pid")")
    names+=("the fake upstream")
fi
# wait returns when a watched process exits, or at once when Ctrl+C runs the INT trap.
status=0
wait -n "${watched[@]}" || status=$?
# Ctrl+C in a terminal reaches the services too, and one of them can exit before this script handles the signal.
if ((status == 130 || status == 143)); then
    exit "$status"
fi
exited=()
for i in "${!watched[@]}"; do
    kill -0 "${watched[$i]}" 2>/dev/null || exited+=("${names[$i]}")
done
fail "${exited[*]:-a service} exited unexpectedly (exit status $status); see the logs in $RUN_DIR"
