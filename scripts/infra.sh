#!/usr/bin/env bash
# Local infrastructure for AddOnEvents: a private RabbitMQ node and a jongodb
# (MongoDB-compatible) server per run, both bound to 127.0.0.1.
#
# Source it for the infra_* functions, or run it:
#   scripts/infra.sh start   start both servers in .run/infra and print their addresses
#   scripts/infra.sh env     print export lines for the servers that `start` left running
#   scripts/infra.sh stop    stop the servers that `start` left running
#
# Every server records its pid in its own folder, so a later run can stop what an
# earlier, killed run left behind.

INFRA_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INFRA_CACHE=${INFRA_CACHE:-$INFRA_REPO/.cache}
INFRA_JONGODB_PACKAGE='@jongodb/memory-server-bin-linux-x64-gnu@0.1.6'
INFRA_JONGODB_BIN=$INFRA_CACHE/jongodb/package/bin/jongodb
# The Debian wrappers in /usr/sbin switch to the rabbitmq user through su, which resets HOME
# and so loses the per-run Erlang cookie. These scripts call the tools below as root instead.
INFRA_RABBITMQ_BIN=/usr/lib/rabbitmq/bin

infra_log() { printf '[infra] %s\n' "$*" >&2; }
infra_error() { printf '[infra] error: %s\n' "$*" >&2; }

# Installs what is missing: RabbitMQ, openssl, curl and Chromium from Debian, and the jongodb binary from npm.
infra_install() {
    if ! command -v dotnet >/dev/null 2>&1; then
        infra_error "dotnet not found on PATH. Install the .NET 10 SDK (global.json asks for 10.0.100 or a later feature band)."
        return 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        infra_error "npm not found on PATH. Install Node.js with npm; it fetches the jongodb binary."
        return 1
    fi

    local missing=()
    [[ -x $INFRA_RABBITMQ_BIN/rabbitmq-server ]] || missing+=(rabbitmq-server)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    # The browser tests drive Debian's Chromium through Playwright, which must not download a browser of its own.
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    if ((${#missing[@]} > 0)); then
        infra_log "installing Debian packages: ${missing[*]}"
        # Without an init system the package cannot start its own service, so
        # infra_start_rabbitmq starts a private node instead.
        if ! DEBIAN_FRONTEND=noninteractive apt-get update -q \
            || ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; then
            infra_error "apt-get install ${missing[*]} failed"
            return 1
        fi
    fi

    if [[ ! -x $INFRA_JONGODB_BIN ]]; then
        infra_log "fetching $INFRA_JONGODB_PACKAGE with npm pack"
        local staging tarball
        staging=$(mktemp -d "${TMPDIR:-/tmp}/jongodb.XXXXXX") || return 1
        # The package contains only a native binary, so npm pack and tar are enough and no install script runs.
        if ! tarball=$(cd "$staging" && npm pack --silent "$INFRA_JONGODB_PACKAGE") \
            || ! tar -xzf "$staging/$tarball" -C "$staging"; then
            infra_error "npm pack $INFRA_JONGODB_PACKAGE failed"
            rm -rf "$staging"
            return 1
        fi
        chmod +x "$staging/package/bin/jongodb"
        # Moving the finished folder into place keeps a half-extracted binary from counting as installed.
        mkdir -p "$INFRA_CACHE"
        rm -rf "$INFRA_CACHE/jongodb"
        mv "$staging" "$INFRA_CACHE/jongodb"
    fi
}

# Installs the Ingress page dependencies (src/Ingress/package.json) when the project has them.
# The build copies the SignalR browser client from node_modules into wwwroot/lib.
infra_install_ingress_npm() {
    infra_install_npm_folder src/Ingress
}

# Installs the official OpenAI Node.js SDK that OpenAISdkTests runs against Ingress
# (tests/AddOnEvents.Tests/Sdk/package.json).
infra_install_sdk_test_npm() {
    infra_install_npm_folder tests/AddOnEvents.Tests/Sdk
}

# Installs the npm packages of FOLDER (relative to the repository) when it has a package.json.
infra_install_npm_folder() {
    local folder=$1
    local dir=$INFRA_REPO/$folder
    [[ -f $dir/package.json ]] || return 0

    # npm writes node_modules/.package-lock.json on every install, so a copy newer than both
    # manifests means node_modules is current. Skipping npm then also avoids deleting
    # node_modules under a build or test run that is using it.
    local installed=$dir/node_modules/.package-lock.json
    if [[ -f $installed && $installed -nt $dir/package.json ]] \
        && [[ ! -f $dir/package-lock.json || $installed -nt $dir/package-lock.json ]]; then
        return 0
    fi

    local npm_command=(npm ci --no-audit --no-fund)
    if [[ ! -f $dir/package-lock.json ]]; then
        infra_log "$folder has no package-lock.json, so npm install resolves versions afresh"
        npm_command=(npm install --no-audit --no-fund)
    fi
    mkdir -p "$INFRA_CACHE"
    # The lock keeps two runs on one machine from installing into the same node_modules at once.
    if ! (cd "$dir" && flock "$INFRA_CACHE/npm.lock" "${npm_command[@]}"); then
        infra_error "${npm_command[*]} failed in $dir"
        return 1
    fi
}

# Sets dotnet defaults for unattended runs, unless the caller has set them already.
# Build servers are turned off because MSBuild nodes and the compiler server would
# otherwise outlive the build as extra dotnet processes.
infra_dotnet_defaults() {
    export DOTNET_CLI_TELEMETRY_OPTOUT=${DOTNET_CLI_TELEMETRY_OPTOUT:-1}
    export DOTNET_NOLOGO=${DOTNET_NOLOGO:-1}
    export MSBUILDDISABLENODEREUSE=${MSBUILDDISABLENODEREUSE:-1}
    export DOTNET_CLI_USE_MSBUILD_SERVER=${DOTNET_CLI_USE_MSBUILD_SERVER:-0}
    export UseSharedCompilation=${UseSharedCompilation:-false}
}

infra_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a port P in 15000-24999 such that P and P+OFFSET for every OFFSET given are free on 127.0.0.1.
infra_free_port() {
    local attempt port offset busy
    for ((attempt = 0; attempt < 200; attempt++)); do
        # 10000-12699 keeps PORT+10000 and PORT+20000 (RabbitMQ's management and distribution ports) below
        # 32768, where Linux starts handing out ephemeral ports to outgoing connections, which could take them.
        port=$((10000 + RANDOM % 2700))
        busy=0
        for offset in 0 "$@"; do
            if infra_port_in_use $((port + offset)); then
                busy=1
                break
            fi
        done
        if ((busy == 0)); then
            echo "$port"
            return 0
        fi
    done
    infra_error "no free port found in 10000-12699 after 200 tries"
    return 1
}

# Prints a free AMQP port for infra_start_rabbitmq, whose management port (PORT+10000) and
# distribution port (PORT+20000) are free too.
infra_free_rabbitmq_port() {
    infra_free_port 10000 20000
}

# Succeeds when PID is alive and its command line contains PATTERN, so a recycled pid is not taken for ours.
infra_pid_alive() {
    local pid=$1 pattern=$2
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"
}

# Sends SIGTERM to PID, waits up to SECONDS, then sends SIGKILL.
infra_terminate() {
    local pid=$1 seconds=${2:-15} pattern=${3:-}
    infra_pid_alive "$pid" "$pattern" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    local tick
    for ((tick = 0; tick < seconds * 10; tick++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    infra_log "pid $pid did not exit within ${seconds} s of SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Runs a RabbitMQ tool (rabbitmq-server, rabbitmqctl) with the environment of the node in DIR.
infra_rabbitmq_cli() {
    local dir=$1 tool=$2
    shift 2
    (
        # shellcheck source=/dev/null
        source "$dir/node.env"
        exec "$INFRA_RABBITMQ_BIN/$tool" "$@"
    )
}

infra_epmd_has_node() {
    epmd -names 2>/dev/null | grep -q "^name $1 at port"
}

# Starts a private RabbitMQ node with its data, logs, config and Erlang cookie in DIR.
# Listens on 127.0.0.1:PORT (AMQP), 127.0.0.1:MGMT_PORT (management HTTP API, default PORT+10000)
# and 127.0.0.1:PORT+20000 (Erlang distribution). rabbitmqctl calls for it use PORT+30000 to
# PORT+30010. The node name is addon-PORT@localhost. INFRA_RABBITMQ_LISTENERS, when set, replaces the
# AMQP listener line of the node's configuration.
infra_start_rabbitmq() {
    local dir=$1 port=$2
    local mgmt_port=${3:-${MGMT_PORT:-$((port + 10000))}}
    local dist_port=$((port + 20000))
    local name="addon-$port"
    local node="$name@localhost"

    infra_stop_rabbitmq "$dir"
    if infra_epmd_has_node "$name"; then
        infra_error "RabbitMQ node $node is already registered with epmd but was not started from $dir, so its cookie is unknown. Stop that node or choose another port."
        return 1
    fi
    local p
    for p in "$port" "$mgmt_port" "$dist_port"; do
        if infra_port_in_use "$p"; then
            infra_error "port $p on 127.0.0.1 is in use; RabbitMQ needs $port (AMQP), $mgmt_port (management) and $dist_port (distribution)"
            return 1
        fi
    done

    rm -rf "$dir"
    mkdir -p "$dir/mnesia" "$dir/log" || return 1
    dir=$(cd "$dir" && pwd)
    # An empty env file keeps /etc/rabbitmq/rabbitmq-env.conf out of this node.
    : >"$dir/rabbitmq-env.conf"
    cat >"$dir/rabbitmq.conf" <<EOF
${INFRA_RABBITMQ_LISTENERS:-listeners.tcp.1 = 127.0.0.1:$port}
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt_port
loopback_users.guest = true
EOF
    echo '[rabbitmq_management].' >"$dir/enabled_plugins"
    {
        printf 'export HOME=%q\n' "$dir"
        printf 'export RABBITMQ_NODENAME=%q\n' "$node"
        printf 'export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1\n'
        printf 'export RABBITMQ_NODE_PORT=%q\n' "$port"
        printf 'export RABBITMQ_DIST_PORT=%q\n' "$dist_port"
        printf 'export RABBITMQ_CONF_ENV_FILE=%q\n' "$dir/rabbitmq-env.conf"
        printf 'export RABBITMQ_CONFIG_FILE=%q\n' "$dir/rabbitmq.conf"
        printf 'export RABBITMQ_ADVANCED_CONFIG_FILE=%q\n' "$dir/advanced.config"
        printf 'export RABBITMQ_ENABLED_PLUGINS_FILE=%q\n' "$dir/enabled_plugins"
        printf 'export RABBITMQ_MNESIA_BASE=%q\n' "$dir/mnesia"
        printf 'export RABBITMQ_LOG_BASE=%q\n' "$dir/log"
        printf 'export RABBITMQ_PID_FILE=%q\n' "$dir/rabbitmq.pid"
        printf 'export ERL_EPMD_ADDRESS=127.0.0.1\n'
        printf 'export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=%q\n' '-kernel inet_dist_use_interface {127,0,0,1}'
        # rabbitmqctl runs as a short-lived Erlang node with its own distribution listener. Its default
        # ports (35672-35682) fall inside the range that infra_free_rabbitmq_port hands out for PORT+20000.
        printf 'export RABBITMQ_CTL_ERL_ARGS=%q\n' '-kernel inet_dist_use_interface {127,0,0,1}'
        printf 'export RABBITMQ_CTL_DIST_PORT_MIN=%q\n' "$((port + 30000))"
        printf 'export RABBITMQ_CTL_DIST_PORT_MAX=%q\n' "$((port + 30010))"
        printf 'INFRA_RABBITMQ_NODE=%q\n' "$node"
        printf 'INFRA_RABBITMQ_PORT=%q\n' "$port"
        printf 'INFRA_RABBITMQ_MGMT_PORT=%q\n' "$mgmt_port"
    } >"$dir/node.env"

    # NOTE: an epmd that is already running is reused as it is, so when something else started
    # it without ERL_EPMD_ADDRESS it listens on every interface, not only on 127.0.0.1.
    local started=$SECONDS
    infra_log "starting RabbitMQ node $node on 127.0.0.1:$port (management port $mgmt_port)"
    if ! infra_rabbitmq_cli "$dir" rabbitmq-server -detached </dev/null >"$dir/log/start.log" 2>&1; then
        infra_error "rabbitmq-server -detached failed for $node; see $dir/log/start.log"
        return 1
    fi
    if ! infra_rabbitmq_cli "$dir" rabbitmqctl -n "$node" wait --timeout 60 "$dir/rabbitmq.pid" \
        </dev/null >>"$dir/log/start.log" 2>&1; then
        infra_error "RabbitMQ node $node did not become ready within 60 s; see the logs in $dir/log"
        infra_stop_rabbitmq "$dir"
        return 1
    fi

    export INFRA_RABBITMQ_DIR=$dir
    export INFRA_RABBITMQ_NODE=$node
    export INFRA_RABBITMQ_PORT=$port
    export INFRA_RABBITMQ_MGMT_PORT=$mgmt_port
    infra_log "RabbitMQ node $node ready in $((SECONDS - started)) s"
}

# Starts a private RabbitMQ node like infra_start_rabbitmq, whose only AMQP listener is TLS on 127.0.0.1:PORT,
# with the server certificate and CA from CERT_DIR (made by scripts/tls-certs.sh). Clients may present a
# certificate, which must then be signed by that CA. The INFRA_RABBITMQ_* variables keep describing the
# plain node that infra_start_rabbitmq started.
infra_start_rabbitmq_tls() {
    local dir=$1 port=$2 certs
    certs=$(cd "$3" && pwd) || return 1
    local file
    for file in ca.crt server.crt server.key; do
        if [[ ! -f $certs/$file ]]; then
            infra_error "$certs/$file is missing; create the certificates with scripts/tls-certs.sh $certs"
            return 1
        fi
    done
    # The subshell keeps infra_start_rabbitmq's exports, which describe the plain node, out of this shell.
    (
        INFRA_RABBITMQ_LISTENERS="listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$port
ssl_options.cacertfile = $certs/ca.crt
ssl_options.certfile = $certs/server.crt
ssl_options.keyfile = $certs/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false"
        infra_start_rabbitmq "$dir" "$port"
    )
}

# Stops the RabbitMQ node started from DIR (default: the last one this shell started).
# Does nothing when no node runs from there.
infra_stop_rabbitmq() {
    local dir=${1:-${INFRA_RABBITMQ_DIR:-}}
    [[ -n $dir && -f $dir/node.env ]] || return 0
    local node pid
    node=$(
        # shellcheck source=/dev/null
        source "$dir/node.env"
        echo "$INFRA_RABBITMQ_NODE"
    )
    pid=$(cat "$dir/rabbitmq.pid" 2>/dev/null || true)
    if ! infra_pid_alive "$pid" beam && ! infra_epmd_has_node "${node%@*}"; then
        return 0
    fi

    infra_log "stopping RabbitMQ node $node"
    if ! infra_rabbitmq_cli "$dir" rabbitmqctl -n "$node" --timeout 60 shutdown \
        </dev/null >>"$dir/log/stop.log" 2>&1; then
        infra_log "rabbitmqctl shutdown failed for $node (see $dir/log/stop.log); terminating pid ${pid:-unknown}"
        infra_terminate "$pid" 15 beam
    fi
    infra_stop_idle_epmd
}

# Stops epmd when no Erlang node is registered with it any more, so a finished run leaves no daemon behind.
infra_stop_idle_epmd() {
    local names
    names=$(epmd -names 2>/dev/null) || return 0
    if ! grep -q '^name ' <<<"$names"; then
        epmd -kill >/dev/null 2>&1 || true
    fi
}

# Starts jongodb on 127.0.0.1 (PORT, default: a free port that jongodb picks) with its output in DIR,
# and exports its connection string as MONGO_URI.
infra_start_jongodb() {
    local dir=$1 port=${2:-0}
    infra_stop_jongodb "$dir"
    if [[ ! -x $INFRA_JONGODB_BIN ]]; then
        infra_error "jongodb not found at $INFRA_JONGODB_BIN; run infra_install first"
        return 1
    fi
    rm -rf "$dir"
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd)

    # The background job opens its output file only when it runs, so the file is created first for the poll below.
    : >"$dir/jongodb.out"
    "$INFRA_JONGODB_BIN" --host=127.0.0.1 --port="$port" </dev/null >>"$dir/jongodb.out" 2>"$dir/jongodb.err" &
    local pid=$!
    echo "$pid" >"$dir/jongodb.pid"

    # jongodb prints its connection string once it accepts connections.
    local uri
    if ! uri=$(infra_wait_for_announcement "$dir/jongodb.out" JONGODB_URI "$pid" jongodb "$dir/jongodb.out and $dir/jongodb.err"); then
        infra_stop_jongodb "$dir"
        return 1
    fi

    export INFRA_JONGODB_DIR=$dir
    export MONGO_URI=$uri
    infra_log "jongodb ready at $uri"
}

# Stops the jongodb started from DIR (default: the last one this shell started).
infra_stop_jongodb() {
    local dir=${1:-${INFRA_JONGODB_DIR:-}}
    [[ -n $dir && -f $dir/jongodb.pid ]] || return 0
    local pid
    pid=$(cat "$dir/jongodb.pid")
    if infra_pid_alive "$pid" jongodb; then
        infra_log "stopping jongodb (pid $pid)"
        infra_terminate "$pid" 10 jongodb
    fi
    rm -f "$dir/jongodb.pid"
}

# Generates throwaway secrets for a local run into DIR/secrets.env (mode 600) and exports them.
# The values are never printed.
infra_secrets() {
    local dir=$1
    local file=$dir/secrets.env
    mkdir -p "$dir" || return 1

    local pem private_key public_key master_key fingerprint_key admin_token signing_key user_id_key
    pem=$(openssl ecparam -name prime256v1 -genkey -noout) || return 1
    private_key=$(printf '%s\n' "$pem" | openssl pkcs8 -topk8 -nocrypt -outform DER | base64 -w0)
    public_key=$(printf '%s\n' "$pem" | openssl pkey -pubout -outform DER | base64 -w0)
    master_key=$(openssl rand -base64 32)
    fingerprint_key=$(openssl rand -base64 32)
    admin_token=$(openssl rand -hex 32)
    signing_key=$(openssl rand -base64 48 | tr -d '\n')
    user_id_key=$(openssl rand -base64 48 | tr -d '\n')
    local value
    for value in "$private_key" "$public_key" "$master_key" "$fingerprint_key" "$admin_token" "$signing_key" "$user_id_key"; do
        if [[ -z $value ]]; then
            infra_error "openssl failed to generate a secret for the local run"
            return 1
        fi
    done

    (
        umask 077
        rm -f "$file"
        {
            echo "export Sealing__KeyId=seal1"
            echo "export Sealing__PrivateKey=$private_key"
            echo "export Sealing__PublicKey=$public_key"
            echo "export MasterKeys__CurrentKeyId=mk1"
            echo "export MasterKeys__Keys__mk1=$master_key"
            echo "export Fingerprint__Key=$fingerprint_key"
            echo "export Auth__AdminToken=$admin_token"
            echo "export Auth__TokenSigningKey=$signing_key"
            echo "export Auth__UserIdKey=$user_id_key"
        } >"$file"
    ) || return 1
    chmod 600 "$file"
    # shellcheck source=/dev/null
    source "$file"
}

# Exports the connection settings of the running servers for the services and for the tests.
# Prints `env -u` arguments for the secrets that service NAME must not receive. Each service
# gets only the secrets it needs, so the sealing private key and the master keys never reach Ingress.
infra_service_unset_args() {
    local names=()
    case $1 in
        Ingress) names=(Sealing__PrivateKey MasterKeys__CurrentKeyId MasterKeys__Keys__mk1 Fingerprint__Key) ;;
        KeyWorker) names=(Sealing__PublicKey Auth__AdminToken Auth__TokenSigningKey Auth__UserIdKey) ;;
        PromptWorker) names=(Sealing__KeyId Sealing__PrivateKey Sealing__PublicKey Fingerprint__Key
            Auth__AdminToken Auth__TokenSigningKey Auth__UserIdKey) ;;
    esac
    local name
    for name in "${names[@]}"; do
        printf -- '-u\n%s\n' "$name"
    done
}

# Starts service NAME (Ingress, KeyWorker or PromptWorker) from its Release build on 127.0.0.1:PORT in the
# background, with only the secrets it needs, logging to DIR/NAME.log and writing its pid to DIR/NAME.pid.
# The project folder is the content root, so Ingress serves its pages from src/Ingress/wwwroot.
infra_start_service() {
    local name=$1 port=$2 dir=$3 unset_args
    mapfile -t unset_args < <(infra_service_unset_args "$name")
    (
        cd "src/$name"
        exec env "${unset_args[@]}" dotnet "bin/Release/net10.0/AddOnEvents.$name.dll" --urls "http://127.0.0.1:$port"
    ) </dev/null >>"$dir/$name.log" 2>&1 &
    echo "$!" >"$dir/$name.pid"
}

# Starts the fake OpenAI upstream of tool DLL (a program with a fake-upstream command) on 127.0.0.1:PORT in the
# background, with the extra ARGS, logging to DIR/FakeUpstream.log and writing its pid to DIR/FakeUpstream.pid.
# Prints its base URL once it listens, within 15 s.
infra_start_fake_upstream() {
    local dir=$1 port=$2 dll=$3
    shift 3
    dotnet "$dll" fake-upstream --port "$port" "$@" </dev/null >"$dir/FakeUpstream.log" 2>&1 &
    local pid=$!
    echo "$pid" >"$dir/FakeUpstream.pid"
    infra_wait_for_announcement "$dir/FakeUpstream.log" FAKE_UPSTREAM_URL "$pid" "the fake upstream" "$dir/FakeUpstream.log"
}

# Waits up to 15 s for process PID to write a line KEY=VALUE into FILE, and prints the first VALUE. Fails, naming
# WHAT and pointing at LOGS, when the process exits first or writes no such line in time.
infra_wait_for_announcement() {
    local file=$1 key=$2 pid=$3 what=$4 logs=$5 value="" tick
    for ((tick = 0; tick < 150; tick++)); do
        value=$(sed -n "s/^$key=//p" "$file" | head -n 1) || value=""
        if [[ -n $value ]]; then
            echo "$value"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            infra_error "$what exited during start; see $logs"
            return 1
        fi
        sleep 0.1
    done
    infra_error "$what printed no $key within 15 s; see $logs"
    return 1
}

# Waits until URL answers 200, for up to TIMEOUT seconds. Fails early, showing the end of LOG, when the
# process PID of service NAME exits first.
infra_wait_for_http() {
    local name=$1 url=$2 pid=$3 log=$4 timeout=$5 code
    local deadline=$((SECONDS + timeout))
    while true; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
        [[ $code == 200 ]] && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2
            infra_error "$name exited before $url returned 200; see $log"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            infra_error "$name did not return 200 on $url within $timeout s; see $log"
            return 1
        fi
        sleep 0.3
    done
}

infra_env() {
    if [[ -z ${INFRA_RABBITMQ_PORT:-} || -z ${MONGO_URI:-} ]]; then
        infra_error "infra_env needs a running RabbitMQ node and jongodb (INFRA_RABBITMQ_PORT and MONGO_URI are unset)"
        return 1
    fi
    export RabbitMq__Host=127.0.0.1
    export RabbitMq__Port=$INFRA_RABBITMQ_PORT
    export RabbitMq__Username=guest
    export RabbitMq__Password=guest
    export Mongo__ConnectionString=$MONGO_URI
    export ADDONEVENTS_TEST_RABBITMQ_PORT=$INFRA_RABBITMQ_PORT
    export ADDONEVENTS_TEST_RABBITMQ_MGMT_PORT=$INFRA_RABBITMQ_MGMT_PORT
    export ADDONEVENTS_TEST_MONGO_URI=$MONGO_URI
}

infra_print_env() {
    local name
    for name in INFRA_RABBITMQ_DIR INFRA_RABBITMQ_NODE INFRA_RABBITMQ_PORT INFRA_RABBITMQ_MGMT_PORT \
        INFRA_JONGODB_DIR MONGO_URI RabbitMq__Host RabbitMq__Port RabbitMq__Username RabbitMq__Password \
        Mongo__ConnectionString ADDONEVENTS_TEST_RABBITMQ_PORT ADDONEVENTS_TEST_RABBITMQ_MGMT_PORT \
        ADDONEVENTS_TEST_MONGO_URI; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done
}

infra_main() {
    set -euo pipefail
    local state=$INFRA_REPO/.run/infra
    case ${1:-} in
        start)
            infra_install
            infra_stop_jongodb "$state/jongodb"
            infra_stop_rabbitmq "$state/rabbitmq"
            rm -rf "$state"
            mkdir -p "$state"
            local port
            port=$(infra_free_rabbitmq_port)
            infra_start_rabbitmq "$state/rabbitmq" "$port"
            infra_start_jongodb "$state/jongodb"
            infra_env
            infra_print_env >"$state/infra.env"
            echo "RabbitMQ node $INFRA_RABBITMQ_NODE: amqp://127.0.0.1:$INFRA_RABBITMQ_PORT, management http://127.0.0.1:$INFRA_RABBITMQ_MGMT_PORT/"
            echo "jongodb: $MONGO_URI"
            echo "Load the settings with: eval \"\$(scripts/infra.sh env)\""
            ;;
        env)
            if [[ ! -f $state/infra.env ]]; then
                infra_error "no servers recorded in $state; run scripts/infra.sh start first"
                return 1
            fi
            cat "$state/infra.env"
            ;;
        stop)
            infra_stop_jongodb "$state/jongodb"
            infra_stop_rabbitmq "$state/rabbitmq"
            rm -f "$state/infra.env"
            ;;
        *)
            echo "usage: scripts/infra.sh start|env|stop" >&2
            return 2
            ;;
    esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    infra_main "$@"
fi
