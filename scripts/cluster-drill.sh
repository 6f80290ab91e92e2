#!/usr/bin/env bash
# Failure drill on a three-node RabbitMQ cluster: starts three private RabbitMQ nodes on 127.0.0.1, joins them
# into one cluster, starts jongodb, the fake OpenAI upstream and the three services (which get all three nodes
# in RabbitMq__ClusterNodes), then runs tools/AddOnEvents.Drill. While prompts and key replacements flow, the
# drill calls back into this script to:
#   stop-leader  stop the node that leads the quorum queue prompt-requested (rabbitmqctl shutdown)
#   start-node   start that node again with its data, so it rejoins the cluster
#   cut-off      cut the node that has the most client connections off from the other two: its Erlang
#                distribution is dropped and its cookie changed so that it cannot reconnect. With
#                cluster_partition_handling = pause_minority it then pauses itself and closes its client connections.
#   heal         give that node its cookie back; it reconnects and resumes
# At the end the drill prints the figures and exits non-zero unless every prompt accepted with 202 got exactly
# one final result. Everything started here is stopped at the end; logs stay in .run/cluster-drill.
#
# Usage: scripts/cluster-drill.sh
# Environment settings (defaults in brackets):
#   DRILL_USERS [10]  DRILL_RATE [20]  DRILL_SEND_SECONDS [150]  DRILL_KEY_INTERVAL_SECONDS [4]  DRILL_DRAIN_SECONDS [60]
#   DRILL_FAULTS [stop-leader@25,start-node@60,cut-off@95,heal@125]   fault@seconds after the traffic starts
#   DRILL_UPSTREAM_LATENCY_MS [100]  the fake upstream's time per answer
#   DRILL_RESULT_RETENTION_SECONDS [45]  PromptWorker__ResultRetentionSeconds (the service's default is 600)
#   DRILL_STREAM [0]  1 asks for streamed answers
#   DRILL_SKIP_BUILD [0]  1 uses the Release build that is already there
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
# shellcheck source=scripts/infra.sh
source scripts/infra.sh

RUN_DIR=${DRILL_RUN_DIR:-$REPO/.run/cluster-drill}
DRILL_DLL=tools/AddOnEvents.Drill/bin/Release/net10.0/AddOnEvents.Drill.dll
READY_TIMEOUT_SECONDS=${READY_TIMEOUT_SECONDS:-120}
PROMPT_QUEUE=prompt-requested
# The cookie a cut-off node gets; the other nodes reject it, so the node stays cut off until it is healed.
CUT_OFF_COOKIE=addonevents_drill_cut_off

fail() {
    printf 'cluster-drill.sh: error: %s\n' "$*" >&2
    exit 1
}

node_dir() { echo "$RUN_DIR/rabbit-$1"; }

node_name() { echo "addon-${PORTS[$1]}@localhost"; }

load_state() {
    [[ -f $RUN_DIR/ports ]] || fail "no cluster recorded in $RUN_DIR"
    read -r -a PORTS <"$RUN_DIR/ports"
}

# Runs rabbitmqctl against node I with the cluster's cookie (written into each node's HOME after its start).
ctl() {
    local index=$1
    shift
    infra_rabbitmq_cli "$(node_dir "$index")" rabbitmqctl -q -n "$(node_name "$index")" "$@" </dev/null 2>/dev/null
}

node_up() {
    infra_port_in_use "${PORTS[$1]}"
}

# Prints the index of the node whose name is $1.
node_index() {
    local index
    for index in 0 1 2; do
        if [[ $(node_name "$index") == "$1" ]]; then
            echo "$index"
            return 0
        fi
    done
    return 1
}

# Prints the node that leads the queue $1, as reported by the first node that responds.
queue_leader() {
    local index leader
    for index in 0 1 2; do
        node_up "$index" || continue
        leader=$(ctl "$index" list_queues --no-table-headers name leader | awk -v q="$1" '$1 == q { print $2 }') || continue
        if [[ -n $leader ]]; then
            echo "$leader"
            return 0
        fi
    done
    return 1
}

# Prints "count port" lines: the number of client connections on each node's AMQP port.
connections_per_port() {
    local index
    for index in 0 1 2; do
        node_up "$index" || continue
        if ctl "$index" list_connections --no-table-headers port | sort | uniq -c | awk '{ print $1, $2 }'; then
            return 0
        fi
    done
    return 1
}

wait_port() {
    local port=$1 want=$2 seconds=$3 tick
    for ((tick = 0; tick < seconds * 10; tick++)); do
        if [[ $want == open ]] && infra_port_in_use "$port"; then return 0; fi
        if [[ $want == closed ]] && ! infra_port_in_use "$port"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# --- faults, run by the drill through "cluster-drill.sh fault NAME" ----------------------------------------------

fault_stop_leader() {
    local leader index
    leader=$(queue_leader "$PROMPT_QUEUE") || fail "no node names a leader for $PROMPT_QUEUE"
    index=$(node_index "$leader") || fail "the leader $leader is not one of this drill's nodes"
    echo "$index" >"$RUN_DIR/stopped-node"
    infra_stop_rabbitmq "$(node_dir "$index")"
    node_up "$index" && fail "$leader still listens after rabbitmqctl shutdown"
    echo "stopped $leader, the leader of $PROMPT_QUEUE; new leader $(queue_leader "$PROMPT_QUEUE" || echo unknown)"
}

fault_start_node() {
    local index dir
    index=$(cat "$RUN_DIR/stopped-node") || fail "no node was stopped"
    dir=$(node_dir "$index")
    # infra_start_rabbitmq would wipe the node's data; the node must come back as the cluster member it was.
    infra_rabbitmq_cli "$dir" rabbitmq-server -detached </dev/null >>"$dir/log/start.log" 2>&1 ||
        fail "rabbitmq-server -detached failed for $(node_name "$index"); see $dir/log"
    infra_rabbitmq_cli "$dir" rabbitmqctl -q -n "$(node_name "$index")" wait --timeout 60 "$dir/rabbitmq.pid" \
        </dev/null >>"$dir/log/start.log" 2>&1 || fail "$(node_name "$index") did not start within 60 s; see $dir/log"
    echo "started $(node_name "$index") again; leader of $PROMPT_QUEUE: $(queue_leader "$PROMPT_QUEUE" || echo unknown)"
}

fault_cut_off() {
    local busiest port index count cookie started
    busiest=$(connections_per_port | sort -rn | head -n 1) || fail "no node lists its connections"
    read -r count port <<<"$busiest"
    index=-1
    for i in 0 1 2; do
        [[ ${PORTS[$i]} == "$port" ]] && index=$i
    done
    ((index >= 0)) || fail "no node of this drill listens on port $port"
    echo "$index" >"$RUN_DIR/cut-node"
    cookie=$(cat "$RUN_DIR/cookie")
    started=$SECONDS
    # Dropping the distribution connections splits the cluster; the changed cookie keeps the other nodes from
    # reconnecting, as a network partition would.
    ctl "$index" eval "erlang:set_cookie(node(), '$CUT_OFF_COOKIE'), [erlang:disconnect_node(N) || N <- nodes()], ok." >/dev/null ||
        fail "could not cut $(node_name "$index") off"
    wait_port "$port" closed 30 || fail "$(node_name "$index") was cut off but did not pause within 30 s"
    [[ $cookie == "$(cat "$RUN_DIR/cookie")" ]] || fail "the cluster cookie changed"
    echo "cut $(node_name "$index") off ($count client connections were on it); it paused itself after $((SECONDS - started)) s"
}

fault_heal() {
    local index dir others=() i
    index=$(cat "$RUN_DIR/cut-node") || fail "no node was cut off"
    dir=$(node_dir "$index")
    for i in 0 1 2; do
        ((i == index)) || others+=("'$(node_name "$i")'")
    done
    RABBITMQ_ERLANG_COOKIE=$CUT_OFF_COOKIE infra_rabbitmq_cli "$dir" rabbitmqctl -q -n "$(node_name "$index")" eval \
        "erlang:set_cookie(node(), '$(cat "$RUN_DIR/cookie")'), [net_adm:ping(N) || N <- [$(IFS=,; echo "${others[*]}")]]." \
        </dev/null >/dev/null 2>&1 || fail "could not give $(node_name "$index") its cookie back"
    wait_port "${PORTS[$index]}" open 60 || fail "$(node_name "$index") did not resume within 60 s"
    echo "healed $(node_name "$index"); it rejoined and listens again"
}

if [[ ${1:-} == fault ]]; then
    load_state
    case ${2:-} in
        stop-leader) fault_stop_leader ;;
        start-node) fault_start_node ;;
        cut-off) fault_cut_off ;;
        heal) fault_heal ;;
        *) fail "unknown fault '${2:-}'; use stop-leader, start-node, cut-off or heal" ;;
    esac
    exit 0
fi

# --- the drill ---------------------------------------------------------------------------------------------------

infra_dotnet_defaults




# Stops the processes and nodes recorded in RUN_DIR, from this run or from one that was killed.
stop_everything() {
    local entry name pattern pid stoppers=()
    for entry in Ingress:AddOnEvents.Ingress.dll KeyWorker:AddOnEvents.KeyWorker.dll \
        PromptWorker:AddOnEvents.PromptWorker.dll FakeUpstream:fake-upstream; do
        name=${entry%%:*}
        pattern=${entry#*:}
        pid=$(cat "$RUN_DIR/$name.pid" 2>/dev/null || true)
        if infra_pid_alive "$pid" "$pattern"; then
            infra_terminate "$pid" 15 "$pattern" &
            stoppers+=($!)
        fi
        rm -f "$RUN_DIR/$name.pid"
    done
    infra_stop_jongodb "$RUN_DIR/jongodb"
    local index
    for index in 0 1 2; do
        infra_stop_rabbitmq "$RUN_DIR/rabbit-$index" &
        stoppers+=($!)
    done
    if ((${#stoppers[@]} > 0)); then
        wait "${stoppers[@]}"
    fi
}

cleanup() {
    set +e
    trap - EXIT INT TERM
    stop_everything
    rm -f "$RUN_DIR/drill.pid"
    echo "Stopped. Logs are in $RUN_DIR"
}

# Sets PORTS[INDEX] to a free port more than 10 away from the other nodes' ports, because rabbitmqctl uses
# PORT+30000 to PORT+30010.
pick_port() {
    local index=$1 port other ok
    while true; do
        port=$(infra_free_rabbitmq_port)
        ok=1
        for other in 0 1 2; do
            ((other == index)) && continue
            [[ -n ${PORTS[$other]:-} ]] && ((port >= PORTS[other] - 10 && port <= PORTS[other] + 10)) && ok=0
        done
        if ((ok)); then
            PORTS[index]=$port
            return 0
        fi
    done
}

start_node() {
    local index=$1 dir
    dir=$(node_dir "$index")
    # infra_start_rabbitmq creates the node's folder afresh, so the shared cookie reaches the first start through the
    # environment and is written to the node's HOME afterwards, where rabbitmqctl and later starts find it.
    # Started from RUN_DIR, a node that crashes leaves its erl_crash.dump there.
    (cd "$RUN_DIR" && RABBITMQ_ERLANG_COOKIE=$(cat "$RUN_DIR/cookie") infra_start_rabbitmq "$dir" "${PORTS[$index]}") || return 1
    rm -f "$dir/.erlang.cookie"
    install -m 400 "$RUN_DIR/cookie" "$dir/.erlang.cookie"
}

# Starts the three nodes side by side. A node whose distribution port was taken between the port check and its
# start (an outgoing connection can get any port of the ephemeral range) is retried on another port.
start_nodes() {
    local attempt index pending=(0 1 2) failed
    local -A starts
    for attempt in 1 2 3; do
        starts=()
        for index in "${pending[@]}"; do
            start_node "$index" &
            starts[$index]=$!
        done
        failed=()
        for index in "${pending[@]}"; do
            wait "${starts[$index]}" || failed+=("$index")
        done
        ((${#failed[@]} == 0)) && return 0
        for index in "${failed[@]}"; do
            echo "$(node_name "$index") did not start (attempt $attempt); retrying on another port"
            pick_port "$index"
        done
        pending=("${failed[@]}")
    done
    fail "a RabbitMQ node did not start after 3 attempts; see $RUN_DIR/rabbit-*/log"
}

if [[ -f $RUN_DIR/drill.pid ]]; then
    previous=$(cat "$RUN_DIR/drill.pid")
    if [[ $previous != "$$" ]] && infra_pid_alive "$previous" cluster-drill.sh; then
        fail "another cluster-drill.sh (pid $previous) is running; wait for it or stop it first"
    fi
fi
stop_everything 2>/dev/null || true
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"
echo "$$" >"$RUN_DIR/drill.pid"
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$SECONDS
infra_install
if [[ ${DRILL_SKIP_BUILD:-0} != 1 ]]; then
    infra_install_ingress_npm
    for project in src/Ingress/Ingress.csproj src/KeyWorker/KeyWorker.csproj src/PromptWorker/PromptWorker.csproj \
        tools/AddOnEvents.Drill/AddOnEvents.Drill.csproj; do
        dotnet build -c Release "$project" -v quiet -nologo >"$RUN_DIR/build.log" 2>&1 ||
            { tail -n 30 "$RUN_DIR/build.log" >&2; fail "building $project failed"; }
    done
    echo "Build took $((SECONDS - started)) s"
fi

PORTS=()
for index in 0 1 2; do
    pick_port "$index"
done
(
    umask 077
    openssl rand -hex 20 | tr -d '\n' >"$RUN_DIR/cookie"
)
chmod 400 "$RUN_DIR/cookie"

phase=$SECONDS
start_nodes
echo "${PORTS[*]}" >"$RUN_DIR/ports"
for index in 1 2; do
    ctl "$index" stop_app >/dev/null
    ctl "$index" join_cluster "$(node_name 0)" >/dev/null || fail "$(node_name "$index") could not join $(node_name 0)"
    ctl "$index" start_app >/dev/null
done
running=$(ctl 0 eval 'length(rabbit_nodes:all_running()).') || fail "the cluster does not answer"
[[ $running == 3 ]] || fail "the cluster runs $running nodes, not 3"
# pause_minority makes a node that loses sight of the majority stop serving, so clients move to the majority side.
# The drill's nodes get the setting at run time because infra.sh writes their configuration files.
for index in 0 1 2; do
    ctl "$index" eval 'application:set_env(rabbit, cluster_partition_handling, pause_minority).' >/dev/null
done
echo "Cluster of $(node_name 0), $(node_name 1), $(node_name 2) ready in $((SECONDS - phase)) s"

infra_start_jongodb "$RUN_DIR/jongodb"
infra_secrets "$RUN_DIR"

base=$(infra_free_port 1 2 3)
fake_port=$((base + 3))
fake_url=$(infra_start_fake_upstream "$RUN_DIR" "$fake_port" "$DRILL_DLL" --latency-ms "${DRILL_UPSTREAM_LATENCY_MS:-100}" \
    --accept-any-key) || fail "the fake upstream did not start"

export RabbitMq__Host=127.0.0.1
export RabbitMq__Port=${PORTS[0]}
export RabbitMq__ClusterNodes="127.0.0.1:${PORTS[0]},127.0.0.1:${PORTS[1]},127.0.0.1:${PORTS[2]}"
export RabbitMq__Username=guest
export RabbitMq__Password=guest
export Mongo__ConnectionString=$MONGO_URI
export Upstream__BaseUrl=$fake_url
export Ingress__RequireHttps=false
# jongodb's writes slow down as a collection grows, so at 20 prompts/s the result records are kept for 45 s instead
# of 10 minutes. That is still more than twice the claim lease, and the drill requests a missed result within seconds.
export PromptWorker__ResultRetentionSeconds=${DRILL_RESULT_RETENTION_SECONDS:-45}
export PromptWorker__CleanupIntervalSeconds=5
# Timestamps let the service logs be lined up with the drill's fault times.
export Logging__Console__FormatterOptions__TimestampFormat='HH:mm:ss.fff '
infra_start_service Ingress "$base" "$RUN_DIR"
infra_start_service KeyWorker "$((base + 1))" "$RUN_DIR"
infra_start_service PromptWorker "$((base + 2))" "$RUN_DIR"
infra_wait_for_http Ingress "http://127.0.0.1:$base/health/ready" "$(cat "$RUN_DIR/Ingress.pid")" "$RUN_DIR/Ingress.log" "$READY_TIMEOUT_SECONDS" || exit 1
infra_wait_for_http KeyWorker "http://127.0.0.1:$((base + 1))/health/ready" "$(cat "$RUN_DIR/KeyWorker.pid")" "$RUN_DIR/KeyWorker.log" "$READY_TIMEOUT_SECONDS" || exit 1
infra_wait_for_http PromptWorker "http://127.0.0.1:$((base + 2))/health/ready" "$(cat "$RUN_DIR/PromptWorker.pid")" "$RUN_DIR/PromptWorker.log" "$READY_TIMEOUT_SECONDS" || exit 1
echo "Services ready $((SECONDS - started)) s after the start; leader of $PROMPT_QUEUE: $(queue_leader "$PROMPT_QUEUE" || echo unknown)"

set +e
# shellcheck disable=SC2154 # infra_secrets exports Auth__AdminToken.
DRILL_INGRESS_URL=http://127.0.0.1:$base/ \
    DRILL_ADMIN_TOKEN=$Auth__AdminToken \
    DRILL_FAULTS=${DRILL_FAULTS:-stop-leader@25,start-node@60,cut-off@95,heal@125} \
    DRILL_SEND_SECONDS=${DRILL_SEND_SECONDS:-150} \
    DRILL_FAULT_COMMAND="DRILL_RUN_DIR=$(printf %q "$RUN_DIR") bash $(printf %q "$REPO/scripts/cluster-drill.sh") fault" \
    DRILL_SETUP="Machine: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GB, $(. /etc/os-release && echo "$PRETTY_NAME"); \
RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo unknown) (3 nodes, quorum queues), jongodb, \
fake upstream with ${DRILL_UPSTREAM_LATENCY_MS:-100} ms per answer; $(date -u '+%Y-%m-%d %H:%M UTC')." \
    dotnet "$DRILL_DLL" run 2>&1 | tee "$RUN_DIR/drill.log"
status=${PIPESTATUS[0]}
set -e
echo "The whole drill took $((SECONDS - started)) s"
exit "$status"
