#!/usr/bin/env bash
# Offline checks of the Helm chart (helm/switchboard), run by scripts/test.sh
# right after scripts/setup.sh (which installs helm and kubernetes-validate):
#   1. helm lint --strict, with the defaults and with every helm/tests/*.yaml;
#   2. helm template of the same, every rendered manifest validated with
#      kubernetes-validate --strict against Kubernetes $KUBE_VERSION;
#      ServiceMonitor (a CRD: kubernetes-validate has no schema for it and only
#      WARNs) is checked against a subset schema of monitoring.coreos.com/v1
#      below; any other kind without a schema is an error (a typo'd kind would
#      otherwise pass with a mere WARN);
#   3. a few chart invariants (security context, gRPC probes, env order,
#      command paths that the Dockerfile provides);
#   4. every helm/tests/bad/*.yaml must be REJECTED by values.schema.json, by
#      both helm template and helm lint, with the message given in its
#      "# error-contains: ..." line;
#   5. the chart's own fail() guards fire.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/switchboard
TESTS=helm/tests
KUBE_VERSION="${SWITCHBOARD_KUBE_VERSION:-1.30.0}"
RELEASE=sb
NAMESPACE=switchboard
start=$SECONDS

log() { echo "check-helm: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for tool in helm kubernetes-validate; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run scripts/setup.sh first"
done
# Python with yaml + jsonschema: the one kubernetes-validate runs on (its venv).
PY="$(dirname "$(readlink -f "$(command -v kubernetes-validate)")")/python"
if ! "$PY" -c 'import yaml, jsonschema' >/dev/null 2>&1; then
    PY=python3
    "$PY" -c 'import yaml, jsonschema' >/dev/null 2>&1 ||
        die "no python with yaml and jsonschema (kubernetes-validate's venv): run scripts/setup.sh"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

shopt -s nullglob
good=("$TESTS"/*.yaml)
bad=("$TESTS"/bad/*.yaml)
[ ${#good[@]} -gt 0 ] || die "no values files in $TESTS"
[ ${#bad[@]} -gt 0 ] || die "no values files in $TESTS/bad"

# ---------------------------------------------------------------- 1+2. lint and render
render() { # name [values file]
    local name="$1" out
    shift
    local args=(--strict "$CHART")
    [ $# -eq 0 ] || args+=(-f "$1")
    if ! out="$(helm lint "${args[@]}" 2>&1)"; then
        echo "$out" >&2
        die "helm lint --strict failed for $name"
    fi
    if ! helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
        --kube-version "$KUBE_VERSION" ${1:+-f "$1"} >"$tmp/$name.yaml" 2>"$tmp/$name.err"; then
        cat "$tmp/$name.err" >&2
        die "helm template failed for $name"
    fi
}

render defaults
for f in "${good[@]}"; do
    render "$(basename "$f" .yaml)" "$f"
done
log "lint + template ok: defaults ${good[*]}"

rendered=("$tmp"/*.yaml)
kv_out="$tmp/kubernetes-validate.out"
if ! kubernetes-validate --strict --quiet -k "$KUBE_VERSION" "${rendered[@]}" >"$kv_out" 2>&1; then
    sed "s|$tmp/||" "$kv_out" >&2
    die "kubernetes-validate --strict (Kubernetes $KUBE_VERSION) rejected rendered manifests"
fi
# Only the ServiceMonitor CRD may lack a schema; anything else is an error.
if unexpected="$(grep -v "Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " "$kv_out")"; then
    echo "$unexpected" | sed "s|$tmp/||" >&2
    die "kubernetes-validate: unexpected output (unknown kind or apiVersion?)"
fi
log "kubernetes-validate --strict ok (Kubernetes $KUBE_VERSION): ${#rendered[@]} rendered sets"

# ---------------------------------------------------------------- 3. CRD + invariants
"$PY" - "$tmp" <<'PY'
import glob, os, sys
import jsonschema, yaml

tmp = sys.argv[1]
errors = []

# Subset of the Prometheus Operator's ServiceMonitor CRD (monitoring.coreos.com/v1):
# the fields the chart may render, with the CRD's types/patterns, closed objects.
DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
SERVICE_MONITOR = {
    "type": "object", "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "additionalProperties": False, "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                           "namespace": {"type": "string", "minLength": 1},
                           "labels": STRMAP, "annotations": STRMAP}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "selector": {
                    "type": "object", "additionalProperties": False, "minProperties": 1,
                    "properties": {"matchLabels": STRMAP, "matchExpressions": {"type": "array"}}},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False, "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"},
                            "metricRelabelings": {"type": "array"}}}}}}}}

def docs(name):
    with open(os.path.join(tmp, name + ".yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def where(d):
    return "%s/%s" % (d["kind"], d["metadata"]["name"])

sets = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(tmp, "*.yaml")))
for name in sets:
    ds = docs(name)
    monitors = [d for d in ds if d.get("kind") == "ServiceMonitor"]
    for d in monitors:
        for e in jsonschema.Draft7Validator(SERVICE_MONITOR).iter_errors(d):
            errors.append("%s: %s: %s: %s" % (name, where(d), "/".join(map(str, e.path)), e.message))
    if name == "servicemonitor":
        got = sorted(d["metadata"]["name"] for d in monitors)
        if got != ["sb-switchboard-relay", "sb-switchboard-server"]:
            errors.append("servicemonitor: expected ServiceMonitors for relay and server, got %s" % got)
    elif monitors:
        errors.append("%s: ServiceMonitor rendered although not enabled" % name)

    services = {d["metadata"]["name"]: d for d in ds if d["kind"] == "Service"}
    for d in ds:
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            w = "%s: %s container %s" % (name, where(d), c["name"])
            sc = c.get("securityContext", {})
            if not (sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True
                    and sc.get("allowPrivilegeEscalation") is False
                    and sc.get("capabilities", {}).get("drop") == ["ALL"]
                    and sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"):
                errors.append(w + ": securityContext is not locked down: %s" % sc)
            if not c.get("resources", {}).get("limits") or not c.get("resources", {}).get("requests"):
                errors.append(w + ": resources requests/limits missing")
            if c["name"] == "redis":
                continue
            if c.get("command") not in (["/usr/local/bin/switchboard-relay"], ["/usr/local/bin/switchboard-server"]):
                errors.append(w + ": unexpected command %s" % c.get("command"))
            grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
            for probe in ("livenessProbe", "readinessProbe"):
                if c.get(probe, {}).get("grpc", {}).get("port") != grpc_port:
                    errors.append(w + ": %s is not a gRPC probe on port %s" % (probe, grpc_port))
            env = [e["name"] for e in c.get("env", [])]
            def before(a, b):
                if a in env and b in env and env.index(a) > env.index(b):
                    errors.append(w + ": env %s must come before %s (for $(%s) to expand)" % (a, b, a))
            before("REDIS_PASSWORD", "SWITCHBOARD_REDIS_URL")
            before("POD_IP", "SWITCHBOARD_ADVERTISE_GRPC")
            url = next((e["value"] for e in c["env"] if e["name"] == "SWITCHBOARD_REDIS_URL"), "")
            if not url.startswith(("redis://", "rediss://")):
                errors.append(w + ": bad SWITCHBOARD_REDIS_URL %r" % url)
            if ("$(REDIS_PASSWORD)" in url) != ("REDIS_PASSWORD" in env):
                errors.append(w + ": REDIS_PASSWORD env and URL reference disagree")
            if d["kind"] == "StatefulSet":
                if d["spec"].get("podManagementPolicy") != "Parallel":
                    errors.append(w + ": podManagementPolicy is not Parallel")
                ids = {e["name"]: e for e in c["env"]}
                if ids.get("SWITCHBOARD_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                    errors.append(w + ": SWITCHBOARD_ID is not the pod name")
                if not ids.get("SWITCHBOARD_ADVERTISE_GRPC", {}).get("value", "").startswith("$(POD_IP):"):
                    errors.append(w + ": SWITCHBOARD_ADVERTISE_GRPC is not $(POD_IP):port")
                relay = ids.get("SWITCHBOARD_RELAY", {}).get("value", "")
                host = relay.split("//")[-1].split(":")[0]
                if host not in services:
                    errors.append(w + ": SWITCHBOARD_RELAY %r names no rendered Service" % relay)
                if services.get(d["spec"]["serviceName"], {}).get("spec", {}).get("clusterIP") != "None":
                    errors.append(w + ": serviceName is not a headless Service")
    if name == "hpa":
        sts = [d for d in ds if d["kind"] == "StatefulSet"][0]
        if "replicas" in sts["spec"]:
            errors.append("hpa: StatefulSet still sets replicas (fights the HPA)")
        if not any(d["kind"] == "HorizontalPodAutoscaler" for d in ds):
            errors.append("hpa: no HorizontalPodAutoscaler rendered")
    if name == "networkpolicy" and sum(d["kind"] == "NetworkPolicy" for d in ds) != 3:
        errors.append("networkpolicy: expected 3 NetworkPolicies (relay, server, redis)")

# The image must provide the binaries the chart runs.
with open("Dockerfile") as f:
    dockerfile = f.read()
for b in ("switchboard-relay", "switchboard-server"):
    if "target/release/" + b not in dockerfile or "/usr/local/bin/" not in dockerfile:
        errors.append("Dockerfile does not install %s into /usr/local/bin" % b)

for e in errors:
    print("check-helm: FAIL: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
log "ServiceMonitor subset schema + chart invariants ok"

# ---------------------------------------------------------------- 4. bad values
for f in "${bad[@]}"; do
    want="$(sed -n 's/^# error-contains: //p' "$f" | head -1)"
    [ -n "$want" ] || die "$f has no '# error-contains: ...' line"
    for cmd in template lint; do
        if [ "$cmd" = template ]; then
            args=(template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" -f "$f")
        else
            args=(lint --strict "$CHART" -f "$f")
        fi
        if out="$(helm "${args[@]}" 2>&1)"; then
            die "helm $cmd ACCEPTED $f (it must be rejected: $want)"
        fi
        if ! grep -q "values don't meet the specifications of the schema" <<<"$out"; then
            echo "$out" >&2
            die "helm $cmd rejected $f, but not by the values schema"
        fi
        if ! grep -qF -- "$want" <<<"$out"; then
            echo "$out" >&2
            die "helm $cmd rejected $f for another reason than: $want"
        fi
    done
    log "rejected as expected: $f: $want"
done

# ---------------------------------------------------------------- 5. template guards
expect_fail() { # message -- helm template args...
    local want="$1" out
    shift
    if out="$(helm template "$RELEASE" "$CHART" --kube-version "$KUBE_VERSION" "$@" 2>&1)"; then
        die "helm template accepted $* (expected: $want)"
    fi
    grep -qF -- "$want" <<<"$out" || { echo "$out" >&2; die "helm template $* failed for another reason than: $want"; }
    log "rejected as expected: $*: $want"
}
expect_fail "must exceed server.drainTimeoutMs" --set server.drainTimeoutMs=30000
expect_fail "must not contain credentials" --set redis.enabled=false \
    --set redis.external.url=redis://u:p@h:6379 --set redis.external.existingSecret=s
expect_fail "minReplicas must not exceed maxReplicas" --set server.autoscaling.enabled=true \
    --set server.autoscaling.minReplicas=5 --set server.autoscaling.maxReplicas=3

log "all checks passed in $((SECONDS - start)) s"
