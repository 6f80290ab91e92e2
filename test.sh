#!/usr/bin/env bash
# Runs the test suite against a private RabbitMQ node and jongodb started for this run.
# The tests start the three services in-process, so this script only provides the broker
# and the database. Extra arguments go to dotnet test, for example:
#   ./test.sh --filter "FullyQualifiedName~Ingress"
# Exits with dotnet test's exit code.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$REPO"
# shellcheck source=scripts/infra.sh
source scripts/infra.sh

infra_dotnet_defaults

RUN_DIR=$REPO/.run/test-$$

SUMMARY=""

# Stops the servers, then prints the summary so that it is the closing line of the output.
cleanup() {
    set +e
    infra_stop_jongodb "$RUN_DIR/jongodb"
    infra_stop_rabbitmq "$RUN_DIR/rabbitmq"
    infra_stop_rabbitmq "$RUN_DIR/rabbitmq-tls"
    if [[ -n $SUMMARY ]]; then
        echo "$SUMMARY"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Removes the folders of earlier test runs whose script has ended, and stops any servers
# that a killed run left behind.
remove_stale_runs() {
    local dir pid
    for dir in "$REPO"/.run/test-*; do
        [[ -d $dir ]] || continue
        pid=${dir##*-}
        if [[ $pid != "$$" ]] && ! kill -0 "$pid" 2>/dev/null; then
            infra_stop_jongodb "$dir/jongodb"
            infra_stop_rabbitmq "$dir/rabbitmq"
            infra_stop_rabbitmq "$dir/rabbitmq-tls"
            rm -rf "$dir"
        fi
    done
}

# Reads one numeric attribute of a TRX <Counters> element, or 0 when it is absent.
counter() {
    local value
    value=$(sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p" <<<"$2")
    echo "${value:-0}"
}

# Prints one closing line with the totals from the TRX files, which cover every test project.
print_summary() {
    local passed=0 failed=0 total=0 file counters
    for file in "$RUN_DIR"/results/*.trx; do
        [[ -f $file ]] || continue
        counters=$(grep -o '<Counters [^>]*>' "$file" | head -n 1) || counters=""
        total=$((total + $(counter total "$counters")))
        passed=$((passed + $(counter passed "$counters")))
        failed=$((failed + $(counter failed "$counters") + $(counter error "$counters") \
            + $(counter timeout "$counters") + $(counter aborted "$counters")))
    done
    if ((failed > 0)); then
        list_failures
    fi
    echo "Tests: $passed passed, $failed failed, $((total - passed - failed)) skipped"
}

# Prints each failed test with the opening lines of its message, so that a log cut down to
# its tail still names what failed.
list_failures() {
    local file
    echo "Failed tests:"
    for file in "$RUN_DIR"/results/*.trx; do
        [[ -f $file ]] || continue
        awk '
            function text(s) {
                gsub(/&quot;/, "\"", s); gsub(/&lt;/, "<", s); gsub(/&gt;/, ">", s); gsub(/&amp;/, "\\&", s)
                return s
            }
            /<UnitTestResult / {
                failed = /outcome="(Failed|Error|Timeout|Aborted)"/
                if (failed && match($0, /testName="[^"]*"/)) {
                    print "  " text(substr($0, RSTART + 10, RLENGTH - 11))
                }
                lines = 0
            }
            failed && /<Message>/ { inside = 1; sub(/.*<Message>/, "") }
            failed && inside {
                done = sub(/<\/Message>.*/, "")
                if (lines < 4) { print "      " text($0); lines++ }
                if (done) { inside = 0 }
            }
        ' "$file"
    done
}

started=$SECONDS
remove_stale_runs
mkdir -p "$RUN_DIR"
infra_install
infra_install_ingress_npm
infra_install_sdk_test_npm

port=$(infra_free_rabbitmq_port)
# A second node, with a TLS listener only and certificates from a throwaway CA, for the TLS tests. Its ports must
# not overlap the first node's, which only a port within 10 of the first can do.
tls_port=$(infra_free_rabbitmq_port)
while ((tls_port >= port - 10 && tls_port <= port + 10)); do
    tls_port=$(infra_free_rabbitmq_port)
done
scripts/tls-certs.sh "$RUN_DIR/tls"
# The two nodes start side by side, which saves the 4-5 s that one takes.
infra_start_rabbitmq_tls "$RUN_DIR/rabbitmq-tls" "$tls_port" "$RUN_DIR/tls" &
tls_node_start=$!
infra_start_rabbitmq "$RUN_DIR/rabbitmq" "$port"
infra_start_jongodb "$RUN_DIR/jongodb"
wait "$tls_node_start"
infra_env
export ADDONEVENTS_TEST_RABBITMQ_TLS_PORT=$tls_port
export ADDONEVENTS_TEST_RABBITMQ_TLS_MGMT_PORT=$((tls_port + 10000))
export ADDONEVENTS_TEST_TLS_DIR=$RUN_DIR/tls
# The browser tests use Debian's Chromium; Playwright must never fetch a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export ADDONEVENTS_TEST_SCREENSHOTS=$RUN_DIR/screenshots
echo "Infrastructure ready in $((SECONDS - started)) s. Running dotnet test."

status=0
dotnet test AddOnEvents.sln -c Release \
    --logger "console;verbosity=normal" \
    --logger "trx;LogFilePrefix=results" \
    --results-directory "$RUN_DIR/results" \
    "$@" || status=$?

if ((status != 0)); then
    echo "dotnet test exited with code $status. The server logs are in $RUN_DIR"
fi
if compgen -G "$ADDONEVENTS_TEST_SCREENSHOTS/*.png" >/dev/null; then
    echo "Screenshots of the pages: $ADDONEVENTS_TEST_SCREENSHOTS"
fi
SUMMARY=$(print_summary)
exit "$status"
