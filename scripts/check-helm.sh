#!/usr/bin/env bash
# Offline checks of the Helm chart (helm/switchboard), run by scripts/test.sh
# right after scripts/setup.sh (which installs helm and kubernetes-validate):
#   1. helm lint --strict, with the defaults and with every helm/tests/*.yaml;
#   2. helm template of the same for every Kubernetes version the chart
#      supports ($KUBE_VERSIONS, 1.27 to 1.31; a values file with a
#      "# min-kube-version: X" line only from X on), every rendered manifest
#      validated with kubernetes-validate --strict against that version;
#      ServiceMonitor (a CRD: kubernetes-validate has no schema for it and only
#      WARNs) is checked against a subset schema of monitoring.coreos.com/v1
#      below; any other kind without a schema is an error (a typo'd kind would
#      otherwise pass with a mere WARN);
#   3. a few chart invariants (security context, gRPC probes, env order,
#      command paths that the Dockerfile provides) and the security wiring:
#      login-token secret (servers), Admin and link tokens (relay + servers),
#      TLS with its plaintext health port for the probes, Redis CA, rate
#      limits, the offline mailbox (on); every /etc/switchboard/... path in the env is a read-only
#      mounted Secret key (or, with tls.perPodCertificates, the servers'
#      csi-driver volume with their server identity); NetworkPolicies (on
#      unless turned off): the gRPC
#      ports and Redis reachable only from the release's own pods;
#      operations: pod-template labels without chart or app version, the
#      grace period covering preStop + lame duck + drain + clean-up, the
#      advertised pod IP, soft topology spread, the relay's node-failure
#      tolerations and ClusterIP Service, HPA replicas kept, the bundled
#      Redis's password, maxmemory and protected mode, the helm test pod;
#      several relays: 2 by default, RollingUpdate with maxUnavailable 0,
#      minReadySeconds, PDB minAvailable 1, anti-affinity by hostname, each
#      announced by pod name and pod IP, a grace period covering its drain,
#      servers that discover them (--discover-relays); mesh mode
#      (helm/tests/mesh.yaml): no relay Deployment, Service or PDB, servers
#      with SWITCHBOARD_MESH and the health flags, server gRPC reachable from
#      the other servers only (and the test pod), the test pod checking the
#      servers only;
#   3b. NOTES.txt rendered (helm install --dry-run=client, offline) for the
#      defaults, tls.yaml and auth-off.yaml: token / Admin / TLS instructions;
#   4. every helm/tests/bad/*.yaml must be REJECTED by values.schema.json, by
#      both helm template and helm lint, with the message given in its
#      "# error-contains: ..." line;
#   5. the chart's own fail() guards fire: every helm/tests/bad-template/*.yaml
#      must be rejected by helm template (with its "# error-contains:"
#      message; "# kube-version: X" renders for that version), and a few
#      --set cases;
#   6. the bundled Redis as rendered, run for real: redis-server with the
#      rendered args (password filled in as Kubernetes would) refuses a
#      client without the password, answers with it, and has the rendered
#      maxmemory policy.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/switchboard
TESTS=helm/tests
# The versions the chart supports (Chart.yaml: kubeVersion >= 1.27); the
# last one is used for the invariants and the guards.
read -r -a KUBE_VERSIONS <<<"${SWITCHBOARD_KUBE_VERSIONS:-1.27.0 1.28.0 1.29.0 1.30.0 1.31.0}"
KUBE_VERSION="${KUBE_VERSIONS[-1]}"
RELEASE=sb
NAMESPACE=switchboard
start=$SECONDS

log() { echo "check-helm: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for tool in helm kubernetes-validate redis-server redis-cli; do
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
bad_template=("$TESTS"/bad-template/*.yaml)
[ ${#good[@]} -gt 0 ] || die "no values files in $TESTS"
[ ${#bad[@]} -gt 0 ] || die "no values files in $TESTS/bad"
[ ${#bad_template[@]} -gt 0 ] || die "no values files in $TESTS/bad-template"

# The value of a "# key: value" header line of a values file.
header() { sed -n "s/^# $2: //p" "$1" | head -1; }

# ---------------------------------------------------------------- 1+2. lint and render
render() { # kube-version name [values file]
    local kube="$1" name="$2" out
    shift 2
    local args=(--strict "$CHART")
    [ $# -eq 0 ] || args+=(-f "$1")
    if [ "$kube" = "$KUBE_VERSION" ] && ! out="$(helm lint "${args[@]}" 2>&1)"; then
        echo "$out" >&2
        die "helm lint --strict failed for $name"
    fi
    mkdir -p "$tmp/$kube"
    if ! helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
        --kube-version "$kube" ${1:+-f "$1"} >"$tmp/$kube/$name.yaml" 2>"$tmp/$name.err"; then
        cat "$tmp/$name.err" >&2
        die "helm template failed for $name (Kubernetes $kube)"
    fi
}

# True if version $1 >= version $2 (x.y.z).
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

kv_out="$tmp/kubernetes-validate.out"
for kube in "${KUBE_VERSIONS[@]}"; do
    render "$kube" defaults
    for f in "${good[@]}"; do
        min="$(header "$f" min-kube-version)"
        if [ -z "$min" ] || at_least "$kube" "$min"; then
            render "$kube" "$(basename "$f" .yaml)" "$f"
        fi
    done
    rendered=("$tmp/$kube"/*.yaml)
    if ! kubernetes-validate --strict --quiet -k "$kube" "${rendered[@]}" >"$kv_out" 2>&1; then
        sed "s|$tmp/||" "$kv_out" >&2
        die "kubernetes-validate --strict (Kubernetes $kube) rejected rendered manifests"
    fi
    # Only the ServiceMonitor CRD may lack a schema; anything else is an error.
    if unexpected="$(grep -v "Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " "$kv_out")"; then
        echo "$unexpected" | sed "s|$tmp/||" >&2
        die "kubernetes-validate: unexpected output (unknown kind or apiVersion?)"
    fi
    log "lint + template + kubernetes-validate --strict ok (Kubernetes $kube): ${#rendered[@]} rendered sets"
done

# ---------------------------------------------------------------- 3. CRD + invariants
"$PY" - "$tmp/$KUBE_VERSION" <<'PY'
import base64, glob, os, re, sys
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

RELAY_SVC = "sb-switchboard-relay"
# Values files (helm/tests/*.yaml) that change the defaults of the security wiring.
AUTH_OFF = {"auth-off"}
EXISTING = {"auth-existing-secrets": {"auth": ("switchboard-login", "hs256-secret"),
                                      "admin": ("switchboard-admin-token", "bearer"),
                                      "link": ("switchboard-link-token", "link")}}
NETPOL_OFF = {"networkpolicy-off"}
TLS_ON = {"tls": "switchboard-tls", "tls-per-pod": "switchboard-tls"}
# Servers' certificates from cert-manager's csi-driver: (issuer, kind).
PER_POD = {"tls-per-pod": ("switchboard-ca", "ClusterIssuer")}
REDIS_CA = {
    "external-redis": ("switchboard-redis-ca", "ca.pem"),
    "external-cluster": ("switchboard-redis-ca", "ca.crt"),
}
REDIS_EXTERNAL = {"external-redis", "external-cluster", "external-sentinel"}
# Sets with the bundled Redis's password from an existing Secret: (name, key).
REDIS_EXISTING = {"operations": ("switchboard-redis-password", "redis-password")}
# Sets with an HPA: their minReplicas.
HPA = {"hpa": 2, "hpa-connections": 3}
# Sets without the helm test pod.
TESTS_OFF = {"operations"}
# Sets that replace the default topology spread / keep Kubernetes' default
# node-failure tolerations for the relay.
CUSTOM_SPREAD = {"operations"}
DEFAULT_TOLERATIONS = {"operations"}
IPV6 = {"ipv6"}
# Sets with a single relay (no relay PDB, no anti-affinity).
ONE_RELAY = {"one-relay"}
# Sets in mesh mode: no relay at all; servers linked to each other.
MESH = {"mesh"}

def env_of(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}

def ceil_s(ms):
    return -(-int(ms) // 1000)

def check_operations(name, ds):
    """What keeps users connected when the cluster changes: stable pod
    labels, a grace period that covers the whole shutdown, spread pods,
    a relay that leaves a failed node, a password-protected bounded Redis,
    and the helm test pod."""
    workloads = {d["metadata"]["name"]: d for d in ds if d["kind"] in ("Deployment", "StatefulSet")}
    for wname, d in workloads.items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        for moving in ("helm.sh/chart", "app.kubernetes.io/version"):
            if moving in labels:
                errors.append("%s: %s pod template carries %s (a chart upgrade would restart it)" % (name, wname, moving))
        for k, v in d["spec"]["selector"]["matchLabels"].items():
            if labels.get(k) != v:
                errors.append("%s: %s pod template label %s is %r, not the selector's %r" % (name, wname, k, labels.get(k), v))
        spread = d["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        keys = sorted(c["topologyKey"] for c in spread if c.get("whenUnsatisfiable") == "ScheduleAnyway")
        if not (name in CUSTOM_SPREAD and wname == "sb-switchboard-server") \
                and keys != ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]:
            errors.append("%s: %s has no soft spread by hostname and zone: %s" % (name, wname, spread))
    sts = workloads["sb-switchboard-server"]
    pod = sts["spec"]["template"]["spec"]
    server = next(c for c in pod["containers"] if c["name"] == "server")
    env = env_of(server)
    pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    need = pre_stop + ceil_s(env["SWITCHBOARD_LAME_DUCK_MS"]) + ceil_s(env["SWITCHBOARD_DRAIN_TIMEOUT_MS"]) + 6
    if pod["terminationGracePeriodSeconds"] < need:
        errors.append("%s: terminationGracePeriodSeconds %d < preStop + lame duck + drain + clean-up = %d"
                      % (name, pod["terminationGracePeriodSeconds"], need))
    if name == "defaults" and env["SWITCHBOARD_LAME_DUCK_MS"] != "15000":
        errors.append("defaults: lame duck %s, want the readiness probe's 5 s x (2 + 1)" % env["SWITCHBOARD_LAME_DUCK_MS"])
    listen = "[::]:9501" if name in IPV6 else "0.0.0.0:9501"
    if env.get("SWITCHBOARD_LISTEN") != listen:
        errors.append("%s: SWITCHBOARD_LISTEN %r, want %r" % (name, env.get("SWITCHBOARD_LISTEN"), listen))
    check_bundled_redis(name, workloads.get("sb-switchboard-redis"))
    check_test_pod(name, ds)
    if name in MESH:
        return check_mesh(name, ds, env)
    relay = workloads["sb-switchboard-relay"]
    tolerations = {t.get("key"): t.get("tolerationSeconds") for t in relay["spec"]["template"]["spec"].get("tolerations", [])}
    want = {} if name in DEFAULT_TOLERATIONS else {"node.kubernetes.io/unreachable": 30, "node.kubernetes.io/not-ready": 30}
    if {k: v for k, v in tolerations.items() if k in want or k.startswith("node.kubernetes.io/")} != want:
        errors.append("%s: relay node-failure tolerations %s, want %s" % (name, tolerations, want))
    relay_c = next(c for c in relay["spec"]["template"]["spec"]["containers"] if c["name"] == "relay")
    if "cpu" in relay_c["resources"].get("limits", {}):
        errors.append("%s: the relay has a CPU limit (it throttles every cross-server message)" % name)
    for who, e in (("server", env), ("relay", env_of(relay_c))):
        if name == "defaults" and e.get("SWITCHBOARD_LOOKUP_BUDGET_PER_SEC") != "2000":
            errors.append("defaults: %s lookup budget %r, want 2000" % (who, e.get("SWITCHBOARD_LOOKUP_BUDGET_PER_SEC")))
    for d in ds:
        if d["kind"] == "Service" and d["metadata"]["name"] == "sb-switchboard-relay" and d["spec"]["type"] != "ClusterIP":
            errors.append("%s: the relay Service is %s, not ClusterIP" % (name, d["spec"]["type"]))
    check_relays(name, ds, relay, env)

def check_mesh(name, ds, server_env):
    """Mesh mode: no relay Deployment, Service or PDB; servers in mesh
    mode (not discovering relays) with the health-check flags."""
    relay_parts = [where(d) for d in ds if d["metadata"]["name"] == "sb-switchboard-relay"
                   and d["kind"] in ("Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor")]
    if relay_parts:
        errors.append("%s: mesh mode renders relay parts: %s" % (name, relay_parts))
    if server_env.get("SWITCHBOARD_MESH") != "true" or "SWITCHBOARD_DISCOVER_RELAYS" in server_env \
            or "SWITCHBOARD_RELAY" in server_env:
        errors.append("%s: servers not in mesh mode: %s" % (name, server_env))
    if server_env.get("SWITCHBOARD_HEALTH_INTERVAL_MS") != "1000" or server_env.get("SWITCHBOARD_HEALTH_FAILURES") != "3":
        errors.append("%s: mesh servers without the health-check flags" % name)

def check_relays(name, ds, relay, server_env):
    """Several active relays: a rollout that never takes the last relay
    away, a budget that keeps one through node drains, relays on different
    nodes, each announced in the registry under its pod name and pod IP,
    and servers that find them there."""
    spec = relay["spec"]
    one = name in ONE_RELAY
    if spec["replicas"] != (1 if one else 2):
        errors.append("%s: %d relays" % (name, spec["replicas"]))
    strategy = spec.get("strategy", {})
    rolling = strategy.get("rollingUpdate", {})
    if strategy.get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0 or rolling.get("maxSurge", 0) < 1:
        errors.append("%s: relay rollout %s may take the last relay away" % (name, strategy))
    if spec.get("minReadySeconds", 0) < 2:
        errors.append("%s: relay minReadySeconds %s leaves servers no time to link" % (name, spec.get("minReadySeconds")))
    pdbs = [d for d in ds if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"] == "sb-switchboard-relay"]
    if one:
        if pdbs:
            errors.append("%s: relay PDB with a single relay (node drains would hang)" % name)
    elif len(pdbs) != 1 or pdbs[0]["spec"].get("minAvailable") != 1 \
            or pdbs[0]["spec"]["selector"]["matchLabels"] != spec["selector"]["matchLabels"]:
        errors.append("%s: no relay PDB minAvailable 1 over the relay pods: %s" % (name, pdbs))
    anti = spec["template"]["spec"].get("affinity", {}).get("podAntiAffinity", {})
    terms = [t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    if not one and not any(t.get("topologyKey") == "kubernetes.io/hostname"
                           and t.get("labelSelector", {}).get("matchLabels") == spec["selector"]["matchLabels"]
                           for t in terms):
        errors.append("%s: relay pods without anti-affinity by hostname: %s" % (name, anti))
    c = next(c for c in spec["template"]["spec"]["containers"] if c["name"] == "relay")
    refs = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
    env = env_of(c)
    if refs.get("SWITCHBOARD_ID") != "metadata.name" or refs.get("POD_IP") != "status.podIP" \
            or env.get("SWITCHBOARD_ADVERTISE_HOST") != "$(POD_IP)":
        errors.append("%s: relay not announced by pod name and pod IP: %s" % (name, c.get("env")))
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    if grace < ceil_s(env["SWITCHBOARD_DRAIN_TIMEOUT_MS"]) + 5:
        errors.append("%s: relay grace %d s does not cover its drain" % (name, grace))
    if server_env.get("SWITCHBOARD_DISCOVER_RELAYS") != "true" or "SWITCHBOARD_RELAY" in server_env:
        errors.append("%s: servers do not discover the relays (%s / %s)" % (name, server_env.get("SWITCHBOARD_DISCOVER_RELAYS"), server_env.get("SWITCHBOARD_RELAY")))

def check_bundled_redis(name, d):
    if name in REDIS_EXTERNAL:
        if d:
            errors.append("%s: bundled Redis rendered with an external one" % name)
        return
    c = d["spec"]["template"]["spec"]["containers"][0]
    args = c["args"]
    opt = lambda flag: args[args.index(flag) + 1] if flag in args else None
    if opt("--requirepass") != "$(REDIS_PASSWORD)" or opt("--protected-mode") != "yes":
        errors.append("%s: bundled Redis without its password or protected mode: %s" % (name, args))
    if not re.match(r"^[0-9]+(mb)?$", opt("--maxmemory") or "") or opt("--maxmemory-policy") not in ("noeviction", "volatile-lru"):
        errors.append("%s: bundled Redis without maxmemory and a presence-safe policy: %s" % (name, args))
    if not re.search(r"(:[0-9]+\.[0-9]+\.[0-9]+-alpine|@sha256:[0-9a-f]{64})$", c["image"]):
        errors.append("%s: bundled Redis image %s is not pinned" % (name, c["image"]))
    sec, key = REDIS_EXISTING.get(name, ("sb-switchboard-redis", "password"))
    refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in c.get("env", [])}
    for var in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        if (refs.get(var, {}).get("name"), refs.get(var, {}).get("key")) != (sec, key):
            errors.append("%s: bundled Redis %s is not from %s/%s" % (name, var, sec, key))

def check_test_pod(name, ds):
    pods = [d for d in ds if d["kind"] == "Pod"]
    if name in TESTS_OFF:
        if pods:
            errors.append("%s: helm test pod rendered although tests.enabled=false" % name)
        return
    if len(pods) != 1:
        errors.append("%s: %d helm test pods, want 1" % (name, len(pods)))
        return
    d = pods[0]
    spec = d["spec"]
    c = spec["containers"][0]
    env = env_of(c)
    if d["metadata"].get("annotations", {}).get("helm.sh/hook") != "test" or spec.get("restartPolicy") != "Never":
        errors.append("%s: test pod is not a helm test hook that runs once" % name)
    if c.get("command") != ["/usr/local/bin/switchboard-check"]:
        errors.append("%s: test pod runs %s" % (name, c.get("command")))
    health = "sb-switchboard-server-headless:9601" if name in MESH else \
        "sb-switchboard-relay:9600,sb-switchboard-server-headless:9601"
    if env.get("SWITCHBOARD_CHECK_CLIENT") != "sb-switchboard-client:9501" or \
            env.get("SWITCHBOARD_CHECK_HEALTH") != health:
        errors.append("%s: test pod checks %s / %s" % (name, env.get("SWITCHBOARD_CHECK_CLIENT"), env.get("SWITCHBOARD_CHECK_HEALTH")))
    sc = c.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") is True and sc.get("runAsNonRoot") is True
            and sc.get("allowPrivilegeEscalation") is False):
        errors.append("%s: test pod securityContext is not locked down" % name)
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    for var, val in env.items():
        if (val or "").startswith("/etc/switchboard/") and val.rsplit("/", 1)[0] not in mounts:
            errors.append("%s: test pod %s=%s is not mounted" % (name, var, val))
    if ("SWITCHBOARD_AUTH_SECRET_FILE" in env) == (name in AUTH_OFF):
        errors.append("%s: test pod login tokens do not match auth.enabled" % name)

def check_security(name, w, d, c, ds, health_port):
    """Login-token / Admin-token / TLS / Redis-CA / rate-limit env, mounts and volumes."""
    server = d["kind"] == "StatefulSet"
    pod = d["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secrets = {s["metadata"]["name"]: s for s in ds if s["kind"] == "Secret"}

    def secret_file(var, path, secret=None, key=None):
        """var=path, path is key `key` of Secret `secret`, mounted read-only."""
        if env.get(var) != path:
            errors.append(w + ": env %s is %r, want %r" % (var, env.get(var), path))
            return
        mdir, fname = path.rsplit("/", 1)
        m = mounts.get(mdir)
        if not m or m.get("readOnly") is not True:
            errors.append(w + ": %s: %s is not a read-only mount" % (var, mdir))
            return
        vs = volumes.get(m["name"], {}).get("secret")
        if not vs:
            errors.append(w + ": %s: volume %s is not a Secret" % (var, m["name"]))
            return
        items = {i["path"]: i["key"] for i in vs.get("items", [])}
        if fname not in items:
            errors.append(w + ": %s: Secret volume %s has no item for %s" % (var, m["name"], fname))
        elif key is not None and (vs["secretName"], items[fname]) != (secret, key):
            errors.append(w + ": %s comes from %s/%s, want %s/%s"
                          % (var, vs["secretName"], items[fname], secret, key))

    def per_pod_tls():
        """Server TLS files from a csi-driver volume: own key, the verified
        name, and the server identity (the pod name is the server id)."""
        issuer, kind = PER_POD[name]
        for f in ("tls.crt", "tls.key", "ca.crt"):
            if env.get("SWITCHBOARD_TLS_" + {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "CA"}[f]) != "/etc/switchboard/tls/" + f:
                errors.append(w + ": TLS env does not name /etc/switchboard/tls/" + f)
        m = mounts.get("/etc/switchboard/tls", {})
        csi = volumes.get(m.get("name"), {}).get("csi", {})
        attrs = csi.get("volumeAttributes", {})
        want = {"csi.cert-manager.io/issuer-name": issuer, "csi.cert-manager.io/issuer-kind": kind,
                "csi.cert-manager.io/issuer-group": "cert-manager.io",
                "csi.cert-manager.io/dns-names": RELAY_SVC,
                "csi.cert-manager.io/uri-sans":
                    "spiffe://cluster.local/ns/${POD_NAMESPACE}/switchboard-server/${POD_NAME}",
                "csi.cert-manager.io/key-usages": "server auth,client auth,digital signature"}
        if m.get("readOnly") is not True or csi.get("driver") != "csi.cert-manager.io" \
                or csi.get("readOnly") is not True or attrs != want:
            errors.append(w + ": per-pod TLS volume is not csi.cert-manager.io with %s: %s" % (want, csi))

    def absent(*names):
        for n in names:
            if n in env:
                errors.append(w + ": env %s set although disabled" % n)

    # Client login tokens: servers only.
    if server and name not in AUTH_OFF:
        sec, key = EXISTING.get(name, {}).get("auth", ("sb-switchboard-auth", "secret"))
        secret_file("SWITCHBOARD_AUTH_SECRET_FILE", "/etc/switchboard/auth/secret", sec, key)
    else:
        absent("SWITCHBOARD_AUTH_SECRET_FILE", "SWITCHBOARD_AUTH_SECRET")
    # Bearer tokens of the gRPC plane, relay and servers: Admin API, link.
    for what in ("admin", "link"):
        var = "SWITCHBOARD_%s_TOKEN" % what.upper()
        if name not in AUTH_OFF:
            sec, key = EXISTING.get(name, {}).get(what, ("sb-switchboard-" + what, "token"))
            secret_file(var + "_FILE", "/etc/switchboard/%s/token" % what, sec, key)
        else:
            absent(var + "_FILE", var)
    # TLS on the gRPC plane.
    tls_env = ("SWITCHBOARD_TLS_CERT", "SWITCHBOARD_TLS_KEY", "SWITCHBOARD_TLS_CA",
               "SWITCHBOARD_TLS_CLIENT_AUTH", "SWITCHBOARD_TLS_SERVER_NAME", "SWITCHBOARD_HEALTH_LISTEN")
    if name in TLS_ON:
        sec = TLS_ON[name]
        if server and name in PER_POD:
            per_pod_tls()
        else:
            for var, f in (("SWITCHBOARD_TLS_CERT", "tls.crt"), ("SWITCHBOARD_TLS_KEY", "tls.key"),
                           ("SWITCHBOARD_TLS_CA", "ca.crt")):
                secret_file(var, "/etc/switchboard/tls/" + f, sec, f)
        if env.get("SWITCHBOARD_TLS_CLIENT_AUTH") != "true":
            errors.append(w + ": SWITCHBOARD_TLS_CLIENT_AUTH is not \"true\"")
        # Servers dial relay pods by IP (from the relay registry) and
        # verify the relay Service's name in their certificate.
        if env.get("SWITCHBOARD_TLS_SERVER_NAME") != RELAY_SVC:
            errors.append(w + ": SWITCHBOARD_TLS_SERVER_NAME is %r, want %s"
                          % (env.get("SWITCHBOARD_TLS_SERVER_NAME"), RELAY_SVC))
        if health_port != 9700 or env.get("SWITCHBOARD_HEALTH_LISTEN") != "0.0.0.0:9700":
            errors.append(w + ": TLS without the plaintext health port 9700 (port %s, env %r)"
                          % (health_port, env.get("SWITCHBOARD_HEALTH_LISTEN")))
    else:
        absent(*tls_env)
        if health_port is not None:
            errors.append(w + ": health port without TLS")
    # Redis CA (external rediss:// with a private CA).
    if name in REDIS_CA:
        secret_file("SWITCHBOARD_REDIS_CA", "/etc/switchboard/redis-ca/ca.crt", *REDIS_CA[name])
    else:
        absent("SWITCHBOARD_REDIS_CA")
    # Every /etc/switchboard path in the env is a mounted Secret key (but
    # per-pod certificates, checked above).
    per_pod = server and name in PER_POD
    for var, val in env.items():
        if (val or "").startswith("/etc/switchboard/") and not (per_pod and val.startswith("/etc/switchboard/tls/")):
            secret_file(var, val)
    # Rate limits: servers only, defaults as values.yaml.
    limits = ("SWITCHBOARD_RATE_LIMIT_PER_SEC", "SWITCHBOARD_RATE_LIMIT_BURST",
              "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", "SWITCHBOARD_ACCEPT_RATE_PER_IP")
    if server:
        want = {"auth-off": ["0", "2000", "50", "10"]}.get(name, ["1000", "2000", "0", "0"])
        got = [env.get(v) for v in limits]
        if got != want:
            errors.append(w + ": rate-limit env %s, want %s" % (got, want))
    else:
        absent(*limits)
    # The offline mailbox: on in the chart (servers only).
    mailbox = ("SWITCHBOARD_MAILBOX", "SWITCHBOARD_MAILBOX_MAX",
               "SWITCHBOARD_MAILBOX_MAX_BYTES", "SWITCHBOARD_MAILBOX_TTL_SECS")
    if server:
        got = [env.get(v) for v in mailbox]
        if got != ["true", "1000", "1048576", "604800"]:
            errors.append(w + ": mailbox env %s, want it on with the defaults" % got)
    else:
        absent(*mailbox)

def check_secrets(name, ds):
    """The chart generates <fullname>-auth/-admin/-link unless disabled or existing."""
    got = {s["metadata"]["name"]: s for s in ds if s["kind"] == "Secret"}
    want = {} if name in AUTH_OFF or name in EXISTING else \
        {"sb-switchboard-auth": "secret", "sb-switchboard-admin": "token", "sb-switchboard-link": "token"}
    if name not in REDIS_EXTERNAL and name not in REDIS_EXISTING:
        want["sb-switchboard-redis"] = "password"
    if sorted(got) != sorted(want):
        errors.append("%s: rendered Secrets %s, want %s" % (name, sorted(got), sorted(want)))
    for sname, key in want.items():
        s = got.get(sname)
        if not s:
            continue
        if s["metadata"].get("annotations", {}).get("helm.sh/resource-policy") != "keep":
            errors.append("%s: Secret %s lacks helm.sh/resource-policy: keep" % (name, sname))
        raw = base64.b64decode(s.get("data", {}).get(key, ""))
        if len(raw) != 48 or not raw.isalnum():
            errors.append("%s: Secret %s/%s is not 48 random alphanumerics (%d bytes)"
                          % (name, sname, key, len(raw)))
    # Services: h2c only when the gRPC ports are plaintext.
    for d in ds:
        if d["kind"] == "Service":
            for p in d["spec"]["ports"]:
                if p["name"] == "grpc" and (p.get("appProtocol") == "kubernetes.io/h2c") == (name in TLS_ON):
                    errors.append("%s: Service %s grpc appProtocol %r does not match TLS"
                                  % (name, d["metadata"]["name"], p.get("appProtocol")))

def check_network_policies(name, ds):
    """On unless turned off: the relay's gRPC port only from servers, the
    servers' gRPC port only from the relay (mesh: only from the other
    servers), the bundled Redis only from both; only client and metrics
    ports may be open to every peer."""
    pols = {d["metadata"]["name"]: d for d in ds if d["kind"] == "NetworkPolicy"}
    bundled = any(d["metadata"]["name"] == "sb-switchboard-redis" for d in ds if d["kind"] == "Deployment")
    mesh = name in MESH
    want = set() if name in NETPOL_OFF else \
        ({"sb-switchboard-server"} if mesh else {"sb-switchboard-relay", "sb-switchboard-server"}) \
        | ({"sb-switchboard-redis"} if bundled else set())
    if set(pols) != want:
        errors.append("%s: NetworkPolicies %s, want %s" % (name, sorted(pols), sorted(want)))
    def sources(pol, port):
        """The peers allowed to `port` (None: every peer)."""
        peers = []
        for rule in pol["spec"].get("ingress", []):
            if any(p.get("port") == port for p in rule.get("ports", [])):
                if "from" not in rule:
                    return None
                peers += [p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                          for p in rule["from"]]
        return sorted(peers, key=str)
    test = [] if name in TESTS_OFF else ["test"]
    only = {"sb-switchboard-relay": (9600, sorted(["server"] + test)),
            "sb-switchboard-server": (9601, sorted(["server" if mesh else "relay"] + test)),
            "sb-switchboard-redis": (6379, ["server"] if mesh else ["relay", "server"])}
    open_ports = {9501, 9090}
    for pname, pol in pols.items():
        if pol["spec"].get("policyTypes") != ["Ingress"]:
            errors.append("%s: NetworkPolicy %s is not ingress-only" % (name, pname))
        port, peers = only[pname]
        if sources(pol, port) != peers:
            errors.append("%s: NetworkPolicy %s lets %s reach port %d, want %s"
                          % (name, pname, sources(pol, port) or "everyone", port, peers))
        for rule in pol["spec"].get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if "from" not in rule and not ports <= open_ports:
                errors.append("%s: NetworkPolicy %s opens %s to everyone" % (name, pname, sorted(ports)))

sets = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(tmp, "*.yaml")))
for want in ["defaults", "auth-off", "tls"] + sorted(MESH) + sorted(EXISTING) + sorted(REDIS_CA) + sorted(NETPOL_OFF) + sorted(PER_POD):
    if want not in sets:
        errors.append("no rendered set %s (helm/tests/%s.yaml missing?)" % (want, want))
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
    check_secrets(name, ds)
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
            if c["name"] not in ("relay", "server"):
                continue  # a user's sidecar (extraContainers)
            if c.get("command") not in (["/usr/local/bin/switchboard-relay"], ["/usr/local/bin/switchboard-server"]):
                errors.append(w + ": unexpected command %s" % c.get("command"))
            grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
            health_port = next((p["containerPort"] for p in c["ports"] if p["name"] == "health"), None)
            # With TLS the kubelet (no TLS) probes the plaintext health port.
            probe_port = health_port or grpc_port
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if c.get(probe, {}).get("grpc", {}).get("port") != probe_port:
                    errors.append(w + ": %s is not a gRPC probe on port %s" % (probe, probe_port))
            env = [e["name"] for e in c.get("env", [])]
            check_security(name, w, d, c, ds, health_port)
            def before(a, b):
                if a in env and b in env and env.index(a) > env.index(b):
                    errors.append(w + ": env %s must come before %s (for $(%s) to expand)" % (a, b, a))
            before("REDIS_PASSWORD", "SWITCHBOARD_REDIS_URL")
            before("REDIS_SENTINEL_PASSWORD", "SWITCHBOARD_REDIS_URL")
            before("POD_IP", "SWITCHBOARD_ADVERTISE_HOST")
            url = next((e["value"] for e in c["env"] if e["name"] == "SWITCHBOARD_REDIS_URL"), "")
            if not re.match(r"^rediss?(\+(sentinel|cluster))?://", url):
                errors.append(w + ": bad SWITCHBOARD_REDIS_URL %r" % url)
            for var in ("REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"):
                if ("$(%s)" % var in url) != (var in env):
                    errors.append(w + ": %s env and URL reference disagree" % var)
            if d["kind"] == "StatefulSet":
                if d["spec"].get("podManagementPolicy") != "Parallel":
                    errors.append(w + ": podManagementPolicy is not Parallel")
                ids = {e["name"]: e for e in c["env"]}
                if ids.get("SWITCHBOARD_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                    errors.append(w + ": SWITCHBOARD_ID is not the pod name")
                # The server formats (and brackets) <pod IP>:<port> itself.
                if ids.get("SWITCHBOARD_ADVERTISE_HOST", {}).get("value") != "$(POD_IP)":
                    errors.append(w + ": SWITCHBOARD_ADVERTISE_HOST is not $(POD_IP)")
                for gone in ("SWITCHBOARD_ADVERTISE_GRPC", "SWITCHBOARD_ADVERTISE_CLIENT"):
                    if gone in ids:
                        errors.append(w + ": %s set (an IPv6 pod IP would need brackets)" % gone)
                if services.get(d["spec"]["serviceName"], {}).get("spec", {}).get("clusterIP") != "None":
                    errors.append(w + ": serviceName is not a headless Service")
    hpas = [d for d in ds if d["kind"] == "HorizontalPodAutoscaler"]
    if name in HPA:
        sts = [d for d in ds if d["kind"] == "StatefulSet"][0]
        # Rendered (the live count, looked up; minReplicas offline): a
        # manifest without replicas would reset them to 1 on the upgrade
        # that turns the HPA on.
        if sts["spec"].get("replicas") != HPA[name]:
            errors.append("%s: StatefulSet replicas %r, want minReplicas %d" % (name, sts["spec"].get("replicas"), HPA[name]))
        if len(hpas) != 1:
            errors.append("%s: no HorizontalPodAutoscaler rendered" % name)
    elif hpas:
        errors.append("%s: HorizontalPodAutoscaler rendered although not enabled" % name)
    check_network_policies(name, ds)
    check_operations(name, ds)

# The image must provide the binaries the chart runs (and switchboard-token,
# which NOTES.txt tells operators to exec), and copy only binaries that exist.
with open("Dockerfile") as f:
    dockerfile = f.read()
for b in ("switchboard-relay", "switchboard-server", "switchboard-token", "switchboard-check"):
    if "target/release/" + b not in dockerfile or "/usr/local/bin/" not in dockerfile:
        errors.append("Dockerfile does not install %s into /usr/local/bin" % b)
# Binaries of the workspace: src/bin/*.rs, and the load generator's package.
OTHER_PACKAGES = {"switchboard-load": "tools/load/src/main.rs"}
for b in re.findall(r"target/release/([\w-]+)", dockerfile):
    if not os.path.exists(OTHER_PACKAGES.get(b, "src/bin/%s.rs" % b)):
        errors.append("Dockerfile copies target/release/%s but the workspace builds no such binary" % b)

for e in errors:
    print("check-helm: FAIL: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
PY
log "ServiceMonitor subset schema + chart invariants (incl. auth/admin/link/TLS/Redis CA/rate limits/NetworkPolicies) ok"

# ---------------------------------------------------------------- 3b. NOTES.txt
notes() { # name [values file]: NOTES.txt as `helm install` prints it (offline)
    helm install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client ${2:+-f "$2"} \
        >"$tmp/notes-$1.out" 2>&1 || { cat "$tmp/notes-$1.out" >&2; die "helm install --dry-run=client failed for $1"; }
    sed -n '/^NOTES:/,$p' "$tmp/notes-$1.out" >"$tmp/notes-$1.txt"
    [ -s "$tmp/notes-$1.txt" ] || die "no NOTES rendered for $1"
}
has() { grep -qF -- "$3" "$tmp/notes-$1.txt" || die "NOTES ($1) lack: $3 ($2)"; }
hasnt() { ! grep -qF -- "$3" "$tmp/notes-$1.txt" || die "NOTES ($1) contain: $3 ($2)"; }
notes defaults
notes tls "$TESTS/tls.yaml"
notes auth-off "$TESTS/auth-off.yaml"
has defaults "login token" "kubectl -n $NAMESPACE exec sb-switchboard-server-0 -- /usr/local/bin/switchboard-token --name alice"
has defaults "login with token" '{"cmd":"login","name":"alice","token":"<token>"'
has defaults "Admin token" "-H \"authorization: Bearer \$(kubectl -n $NAMESPACE get secret sb-switchboard-admin -o jsonpath='{.data.token}' | base64 -d)\""
has defaults "plaintext grpcurl" "grpcurl -plaintext 127.0.0.1:9600 list"
has tls "TLS grpcurl" "grpcurl -cacert ca.crt -cert tls.crt -key tls.key -servername sb-switchboard-relay 127.0.0.1:9600 list"
has tls "CA from the TLS Secret" "get secret switchboard-tls -o jsonpath='{.data.ca\.crt}'"
has defaults "link token and NetworkPolicies" "link token ON, NetworkPolicies ON"
has auth-off "no link token" "link token OFF (any link accepted)"
hasnt auth-off "no token when auth is off" "switchboard-token"
hasnt auth-off "no Admin token when off" "authorization: Bearer"
has defaults "helm test" "helm test $RELEASE -n $NAMESPACE --logs"
log "NOTES.txt ok (defaults, tls, auth-off)"

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
    if out="$(helm template "$RELEASE" "$CHART" "$@" 2>&1)"; then
        die "helm template accepted $* (expected: $want)"
    fi
    grep -qF -- "$want" <<<"$out" || { echo "$out" >&2; die "helm template $* failed for another reason than: $want"; }
    log "rejected as expected: $*: $want"
}
for f in "${bad_template[@]}"; do
    want="$(header "$f" error-contains)"
    [ -n "$want" ] || die "$f has no '# error-contains: ...' line"
    kube="$(header "$f" kube-version)"
    expect_fail "$want" --kube-version "${kube:-$KUBE_VERSION}" -f "$f"
done
expect_fail "must be at least 51 s" --kube-version "$KUBE_VERSION" --set server.drainTimeoutMs=30000
expect_fail "must not contain credentials" --kube-version "$KUBE_VERSION" --set redis.enabled=false \
    --set redis.external.url=redis://u:p@h:6379 --set redis.external.existingSecret=s
expect_fail "minReplicas must not exceed maxReplicas" --kube-version "$KUBE_VERSION" --set server.autoscaling.enabled=true \
    --set server.autoscaling.minReplicas=5 --set server.autoscaling.maxReplicas=3
expect_fail "caSecret needs a rediss://" --kube-version "$KUBE_VERSION" --set redis.enabled=false \
    --set redis.external.url=redis://h:6379 --set redis.external.caSecret=ca
expect_fail "caSecret needs a rediss://" --kube-version "$KUBE_VERSION" --set redis.enabled=false \
    --set redis.external.url=redis+cluster://h:6379 --set redis.external.caSecret=ca
expect_fail "sentinelPasswordSecret needs a redis+sentinel://" --kube-version "$KUBE_VERSION" --set redis.enabled=false \
    --set redis.external.url=redis+cluster://h:6379 --set redis.external.sentinelPasswordSecret=s
expect_fail "must not contain credentials" --kube-version "$KUBE_VERSION" --set redis.enabled=false \
    --set redis.external.url=redis+sentinel://:p@h:26379/m --set redis.external.existingSecret=s
# Behind the schema (which rejects it first, see bad/tls-no-secret.yaml).
expect_fail "tls.existingSecret is required" --kube-version "$KUBE_VERSION" --skip-schema-validation --set tls.enabled=true
expect_fail "tls.perPodCertificates needs tls.enabled=true" --kube-version "$KUBE_VERSION" \
    --set tls.perPodCertificates.enabled=true --set tls.perPodCertificates.issuerName=ca
expect_fail "cannot read the memory quantity" --kube-version "$KUBE_VERSION" --set server.resources.limits.memory=lots

# ---------------------------------------------------------------- 6. the bundled Redis, run
# Its container args as rendered, with $(REDIS_PASSWORD) expanded as the
# kubelet would, on a free loopback port (the rendered --port replaced).
"$PY" - "$tmp/$KUBE_VERSION/defaults.yaml" >"$tmp/redis.args" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-redis"):
        for a in d["spec"]["template"]["spec"]["containers"][0]["args"]:
            print(a)
PY
password="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
redis_port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mapfile -t redis_args <"$tmp/redis.args"
[ "${redis_args[0]}" = redis-server ] || die "the bundled Redis does not run redis-server: ${redis_args[*]}"
for i in "${!redis_args[@]}"; do
    case "${redis_args[$i]}" in
        '$(REDIS_PASSWORD)') redis_args[$i]="$password" ;;
    esac
    [ "${redis_args[$i]}" = --port ] && redis_args[$((i + 1))]="$redis_port"
done
redis-server "${redis_args[@]:1}" --bind 127.0.0.1 --dir "$tmp" >"$tmp/redis.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
    grep -q "Ready to accept connections" "$tmp/redis.log" && break
    kill -0 "$redis_pid" 2>/dev/null || { cat "$tmp/redis.log" >&2; die "redis-server refused the rendered args"; }
    sleep 0.05
done
cli() { redis-cli --no-auth-warning -p "$redis_port" "$@" 2>&1; }
[[ "$(cli ping)" == *NOAUTH* ]] || die "the bundled Redis answers without its password"
[ "$(cli -a "$password" ping)" = PONG ] || die "the bundled Redis does not take its password"
policy="$(cli -a "$password" config get maxmemory-policy | tail -1)"
[ "$policy" = noeviction ] || die "the bundled Redis's maxmemory-policy is $policy"
maxmemory="$(cli -a "$password" config get maxmemory | tail -1)"
[ "$maxmemory" = $((192 * 1024 * 1024)) ] || die "the bundled Redis's maxmemory is $maxmemory, not 75 % of 256Mi"
[ "$(cli -a "$password" config get protected-mode | tail -1)" = yes ] || die "protected mode is off"
kill "$redis_pid"
log "bundled Redis run with its rendered args: password required, maxmemory 192mb, noeviction, protected mode"

log "all checks passed in $((SECONDS - start)) s"
