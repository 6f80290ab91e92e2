#!/usr/bin/env bash
# Benchmarks AddOnEvents on this machine against the floor (the fake upstream called directly) and the Portkey
# gateway: builds everything, starts a private RabbitMQ node, jongodb, the fake upstream, the three services and
# Portkey on 127.0.0.1, then runs the load generator (bench/AddOnEvents.Bench), which prints the tables, saves them
# in .run/bench/results.md and plots docs/benchmarks/overhead.png. Everything started here is stopped at the end.
#
# Environment settings (defaults in brackets):
#   BENCH_LATENCY_MS [50]            the fake upstream's fixed latency per answer
#   BENCH_PIECES_PER_SECOND [100]    the fake's streaming pace
#   BENCH_USERS [1000]               SignalR users connected during the sweep
#   BENCH_IDLE_USERS [10000]         idle users for the memory-per-connection phase (0 skips it)
#   BENCH_RATES [10,25,50,75,100,250,500,1000,2000] target prompts/s of the sweep
#   BENCH_TARGET_RATE [500]          the rate the comparison table and the targets refer to
#   BENCH_STEP_SECONDS [12]          length of each sweep step
#   BENCH_MODES [direct,signalr,v1,portkey,bus]  bus: the two broker hops alone, same broker and settings
#   BENCH_STREAM_SECONDS [8], BENCH_STREAM_RATE [20], BENCH_HOP_SECONDS [8] (0 skips a phase), BENCH_HOP_RATES [25,50]
#   BENCH_BUS_QUEUE [quorum]         the bus floor's request queue: quorum (as PromptWorker's) or classic
#   BENCH_CONCURRENCY [256]          RabbitMq__PrefetchCount and RabbitMq__ConcurrentMessageLimit of the services
#   BENCH_LOG_LEVEL [Warning]        Logging__LogLevel__Default of the services
#   BENCH_RESULT_RETENTION_SECONDS [10]  PromptWorker__ResultRetentionSeconds (the service's default is 600); with
#                                    PromptWorker__CleanupIntervalSeconds=1 it bounds the per-prompt result records,
#                                    because jongodb's single-document writes slow down as a collection grows
#   BENCH_PLOT [docs/benchmarks/overhead.png]
#   BENCH_MONGO_URI                  a MongoDB to use instead of starting jongodb (a fresh database per run)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO"
# shellcheck source=scripts/infra.sh
source scripts/infra.sh

infra_dotnet_defaults

RUN_DIR=$REPO/.run/bench
PORTKEY_DIR=${INFRA_CACHE}/portkey
SERVICES=(Ingress KeyWorker PromptWorker)
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-120}
export BENCH_LATENCY_MS=${BENCH_LATENCY_MS:-50}
export BENCH_PIECES_PER_SECOND=${BENCH_PIECES_PER_SECOND:-100}
BENCH_CONCURRENCY=${BENCH_CONCURRENCY:-256}
BENCH_LOG_LEVEL=${BENCH_LOG_LEVEL:-Warning}
BENCH_RESULT_RETENTION_SECONDS=${BENCH_RESULT_RETENTION_SECONDS:-10}
BENCH_DLL=bench/AddOnEvents.Bench/bin/Release/net10.0/AddOnEvents.Bench.dll

fail() {
    printf 'bench.sh: error: %s\n' "$*" >&2
    exit 1
}


# Stops the processes recorded in DIR as NAME.pid whose command line still contains their PATTERN.
stop_recorded() {
    local dir=$1 entry name pattern pid
    local stoppers=()
    for entry in Driver:AddOnEvents.Bench.dll Ingress:AddOnEvents.Ingress.dll KeyWorker:AddOnEvents.KeyWorker.dll \
        PromptWorker:AddOnEvents.PromptWorker.dll FakeUpstream:fake-upstream Portkey:start-server.js; do
        name=${entry%%:*}
        pattern=${entry#*:}
        pid=$(cat "$dir/$name.pid" 2>/dev/null || true)
        if infra_pid_alive "$pid" "$pattern"; then
            infra_terminate "$pid" 15 "$pattern" &
            stoppers+=($!)
        fi
    done
    # Only the stoppers: a bare wait would also wait for jongodb, which is a child of this shell too.
    if ((${#stoppers[@]} > 0)); then
        wait "${stoppers[@]}"
    fi
    rm -f "$dir"/*.pid
}

stop_all() {
    set +e
    trap - EXIT INT TERM
    stop_recorded "$RUN_DIR"
    infra_stop_jongodb "$RUN_DIR/jongodb"
    infra_stop_rabbitmq "$RUN_DIR/rabbitmq"
    rm -f "$RUN_DIR/bench.pid"
    echo "Stopped. Logs are in $RUN_DIR"
}



# Installs the pinned Portkey gateway into .cache/portkey from bench/portkey/package-lock.json.
install_portkey() {
    local installed=$PORTKEY_DIR/node_modules/.package-lock.json
    if [[ -f $installed && $installed -nt bench/portkey/package-lock.json && $installed -nt bench/portkey/package.json ]]; then
        return 0
    fi
    mkdir -p "$PORTKEY_DIR"
    cp bench/portkey/package.json bench/portkey/package-lock.json "$PORTKEY_DIR/"
    # Its only install script is patch-package, which has no patches to apply in the published package.
    (cd "$PORTKEY_DIR" && flock "$INFRA_CACHE/npm.lock" npm ci --no-audit --no-fund --ignore-scripts) ||
        fail "npm ci of the Portkey gateway failed in $PORTKEY_DIR"
}

# ---------------------------------------------------------------------------------------------------------------

if [[ -f $RUN_DIR/bench.pid ]]; then
    previous=$(cat "$RUN_DIR/bench.pid")
    if [[ $previous != "$$" ]] && infra_pid_alive "$previous" bench.sh; then
        fail "another bench.sh (pid $previous) is running; wait for it or stop it first"
    fi
fi
stop_recorded "$RUN_DIR" 2>/dev/null || true
infra_stop_jongodb "$RUN_DIR/jongodb"
infra_stop_rabbitmq "$RUN_DIR/rabbitmq"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
echo "$$" >"$RUN_DIR/bench.pid"
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 10,000 WebSocket connections need a file descriptor each on both ends; the children inherit this limit.
# Where the hard limit is lower and cannot be raised (a container without CAP_SYS_RESOURCE), the hard limit is used.
if ! ulimit -n 65536 2>/dev/null; then
    ulimit -n "$(ulimit -Hn)"
    echo "The open-file limit cannot be raised to 65536 here; using the hard limit $(ulimit -n)"
fi
if (($(ulimit -n) < ${BENCH_IDLE_USERS:-10000} + 2000)); then
    fail "the open-file limit $(ulimit -n) is too low for ${BENCH_IDLE_USERS:-10000} idle connections; lower BENCH_IDLE_USERS"
fi

started=$SECONDS
infra_install
install_portkey
dotnet build -c Release AddOnEvents.sln -v quiet -nologo || fail "the build failed"
echo "Install and build took $((SECONDS - started)) s"

base=$(infra_free_port 1 2 3 4)
INGRESS_PORT=$base
KEYWORKER_PORT=$((base + 1))
PROMPTWORKER_PORT=$((base + 2))
FAKE_PORT=$((base + 3))
PORTKEY_PORT=$((base + 4))

rabbitmq_port=$(infra_free_rabbitmq_port)
infra_start_rabbitmq "$RUN_DIR/rabbitmq" "$rabbitmq_port"
if [[ -n ${BENCH_MONGO_URI:-} ]]; then
    # A MongoDB of the caller's instead of jongodb; a database per run keeps runs apart.
    export MONGO_URI=$BENCH_MONGO_URI
    export Mongo__Database=bench_$(date +%Y%m%d_%H%M%S)
    echo "Using the MongoDB at BENCH_MONGO_URI, database $Mongo__Database, instead of jongodb"
else
    infra_start_jongodb "$RUN_DIR/jongodb"
fi
infra_secrets "$RUN_DIR"
infra_env

FAKE_URL=$(infra_start_fake_upstream "$RUN_DIR" "$FAKE_PORT" "$BENCH_DLL" --latency-ms "$BENCH_LATENCY_MS" \
    --pieces-per-second "$BENCH_PIECES_PER_SECOND" --accept-any-key --report-timing) || fail "the fake upstream did not start"
echo "Fake upstream at $FAKE_URL: $BENCH_LATENCY_MS ms latency, $BENCH_PIECES_PER_SECOND pieces/s"

export Upstream__BaseUrl=$FAKE_URL
export Logging__LogLevel__Default=$BENCH_LOG_LEVEL
export RabbitMq__PrefetchCount=$BENCH_CONCURRENCY
export RabbitMq__ConcurrentMessageLimit=$BENCH_CONCURRENCY
export PromptWorker__ResultRetentionSeconds=$BENCH_RESULT_RETENTION_SECONDS
export PromptWorker__CleanupIntervalSeconds=1
# Plain HTTP on loopback, as for Portkey and the fake upstream; run.sh does the same.
export Ingress__RequireHttps=false
infra_start_service Ingress "$INGRESS_PORT" "$RUN_DIR"
infra_start_service KeyWorker "$KEYWORKER_PORT" "$RUN_DIR"
infra_start_service PromptWorker "$PROMPTWORKER_PORT" "$RUN_DIR"

(
    cd "$PORTKEY_DIR"
    NODE_ENV=production exec node --import "$REPO/bench/portkey/loopback.mjs" \
        node_modules/@portkey-ai/gateway/build/start-server.js --port="$PORTKEY_PORT" --headless
) </dev/null >"$RUN_DIR/Portkey.log" 2>&1 &
echo "$!" >"$RUN_DIR/Portkey.pid"

infra_wait_for_http Ingress "http://127.0.0.1:$INGRESS_PORT/health/ready" "$(cat "$RUN_DIR/Ingress.pid")" "$RUN_DIR/Ingress.log" "$READY_TIMEOUT_SECONDS" || exit 1
infra_wait_for_http KeyWorker "http://127.0.0.1:$KEYWORKER_PORT/health/ready" "$(cat "$RUN_DIR/KeyWorker.pid")" "$RUN_DIR/KeyWorker.log" "$READY_TIMEOUT_SECONDS" || exit 1
infra_wait_for_http PromptWorker "http://127.0.0.1:$PROMPTWORKER_PORT/health/ready" "$(cat "$RUN_DIR/PromptWorker.pid")" "$RUN_DIR/PromptWorker.log" "$READY_TIMEOUT_SECONDS" || exit 1
# Portkey answers 200 on its root once it listens.
infra_wait_for_http Portkey "http://127.0.0.1:$PORTKEY_PORT/" "$(cat "$RUN_DIR/Portkey.pid")" "$RUN_DIR/Portkey.log" "$READY_TIMEOUT_SECONDS" || exit 1
echo "Everything is up $((SECONDS - started)) s after the start (load average $(cut -d' ' -f1-3 /proc/loadavg))"

pids="Ingress=$(cat "$RUN_DIR/Ingress.pid"),KeyWorker=$(cat "$RUN_DIR/KeyWorker.pid"),PromptWorker=$(cat "$RUN_DIR/PromptWorker.pid")"
pids+=",FakeUpstream=$(cat "$RUN_DIR/FakeUpstream.pid"),Portkey=$(cat "$RUN_DIR/Portkey.pid")"
pids+=",RabbitMQ=$(cat "$RUN_DIR/rabbitmq/rabbitmq.pid")"
if [[ -f $RUN_DIR/jongodb/jongodb.pid ]]; then
    pids+=",jongodb=$(cat "$RUN_DIR/jongodb/jongodb.pid")"
fi

# jongodb cannot list collections, so the collection names come from the code.
collections=$(grep -rhoP 'GetCollection<[^>]+>\("\K[^"]+|CollectionName = "\K[^"]+' src | sort -u | paste -sd, -)

BENCH_INGRESS_URL=http://127.0.0.1:$INGRESS_PORT/ \
    BENCH_FAKE_URL=$FAKE_URL \
    BENCH_PORTKEY_URL=http://127.0.0.1:$PORTKEY_PORT/ \
    BENCH_MONGO_URI=$MONGO_URI \
    BENCH_MONGO_DATABASE=${Mongo__Database:-addonevents} \
    BENCH_COLLECTIONS=$collections \
    BENCH_RABBITMQ_PORT=$INFRA_RABBITMQ_PORT \
    BENCH_CONCURRENCY=$BENCH_CONCURRENCY \
    BENCH_RABBITMQ_MGMT_PORT=$INFRA_RABBITMQ_MGMT_PORT \
    BENCH_PIDS=$pids \
    BENCH_OUT=$RUN_DIR \
    BENCH_PLOT=${BENCH_PLOT:-$REPO/docs/benchmarks/overhead.png} \
    BENCH_NODE_VERSION=$(node --version) \
    BENCH_SERVICE_SETTINGS="RabbitMq__PrefetchCount=$BENCH_CONCURRENCY, RabbitMq__ConcurrentMessageLimit=$BENCH_CONCURRENCY, Logging__LogLevel__Default=$BENCH_LOG_LEVEL, PromptWorker__ResultRetentionSeconds=$BENCH_RESULT_RETENTION_SECONDS, PromptWorker__CleanupIntervalSeconds=1, Ingress__RequireHttps=false (bench.sh sets them; the services' defaults are 32, 32, Information, 600, 60 and true outside Development)" \
    dotnet "$BENCH_DLL" run > >(tee "$RUN_DIR/bench.log") 2>&1 &
echo "$!" >"$RUN_DIR/Driver.pid"
# Waiting on a background job lets Ctrl+C and SIGTERM reach the traps at once; the EXIT trap stops the driver.
status=0
wait "$(cat "$RUN_DIR/Driver.pid")" || status=$?
rm -f "$RUN_DIR/Driver.pid"
echo "The whole run took $((SECONDS - started)) s"
exit "$status"
