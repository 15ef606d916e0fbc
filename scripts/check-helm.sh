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
#      command paths that the Dockerfile provides) and the security wiring:
#      login-token secret (servers), Admin and link tokens (relay + servers),
#      TLS with its plaintext health port for the probes, Redis CA, rate
#      limits; every /etc/switchboard/... path in the env is a read-only
#      mounted Secret key (or, with tls.perPodCertificates, the servers'
#      csi-driver volume with their server identity); NetworkPolicies (on
#      unless turned off): the gRPC
#      ports and Redis reachable only from the release's own pods;
#   3b. NOTES.txt rendered (helm install --dry-run=client, offline) for the
#      defaults, tls.yaml and auth-off.yaml: token / Admin / TLS instructions;
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
    relay_url = env.get("SWITCHBOARD_RELAY", "")
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
        if env.get("SWITCHBOARD_TLS_SERVER_NAME") != RELAY_SVC:
            errors.append(w + ": SWITCHBOARD_TLS_SERVER_NAME is %r, want %s"
                          % (env.get("SWITCHBOARD_TLS_SERVER_NAME"), RELAY_SVC))
        if health_port != 9700 or env.get("SWITCHBOARD_HEALTH_LISTEN") != "0.0.0.0:9700":
            errors.append(w + ": TLS without the plaintext health port 9700 (port %s, env %r)"
                          % (health_port, env.get("SWITCHBOARD_HEALTH_LISTEN")))
        if server and relay_url != "https://%s:9600" % RELAY_SVC:
            errors.append(w + ": SWITCHBOARD_RELAY %r is not https://%s:9600" % (relay_url, RELAY_SVC))
    else:
        absent(*tls_env)
        if health_port is not None:
            errors.append(w + ": health port without TLS")
        if server and not relay_url.startswith("http://"):
            errors.append(w + ": SWITCHBOARD_RELAY %r is not http:// without TLS" % relay_url)
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

def check_secrets(name, ds):
    """The chart generates <fullname>-auth/-admin/-link unless disabled or existing."""
    got = {s["metadata"]["name"]: s for s in ds if s["kind"] == "Secret"}
    want = {} if name in AUTH_OFF or name in EXISTING else \
        {"sb-switchboard-auth": "secret", "sb-switchboard-admin": "token", "sb-switchboard-link": "token"}
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
    servers' gRPC port only from the relay, the bundled Redis only from
    both; only client and metrics ports may be open to every peer."""
    pols = {d["metadata"]["name"]: d for d in ds if d["kind"] == "NetworkPolicy"}
    bundled = any(d["metadata"]["name"] == "sb-switchboard-redis" for d in ds if d["kind"] == "Deployment")
    want = set() if name in NETPOL_OFF else \
        {"sb-switchboard-relay", "sb-switchboard-server"} | ({"sb-switchboard-redis"} if bundled else set())
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
    only = {"sb-switchboard-relay": (9600, ["server"]), "sb-switchboard-server": (9601, ["relay"]),
            "sb-switchboard-redis": (6379, ["relay", "server"])}
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
for want in ["defaults", "auth-off", "tls"] + sorted(EXISTING) + sorted(REDIS_CA) + sorted(NETPOL_OFF) + sorted(PER_POD):
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
            before("POD_IP", "SWITCHBOARD_ADVERTISE_GRPC")
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
    check_network_policies(name, ds)

# The image must provide the binaries the chart runs (and switchboard-token,
# which NOTES.txt tells operators to exec), and copy only binaries that exist.
with open("Dockerfile") as f:
    dockerfile = f.read()
for b in ("switchboard-relay", "switchboard-server", "switchboard-token"):
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
expect_fail "caSecret needs a rediss://" --set redis.enabled=false \
    --set redis.external.url=redis://h:6379 --set redis.external.caSecret=ca
expect_fail "caSecret needs a rediss://" --set redis.enabled=false \
    --set redis.external.url=redis+cluster://h:6379 --set redis.external.caSecret=ca
expect_fail "sentinelPasswordSecret needs a redis+sentinel://" --set redis.enabled=false \
    --set redis.external.url=redis+cluster://h:6379 --set redis.external.sentinelPasswordSecret=s
expect_fail "must not contain credentials" --set redis.enabled=false \
    --set redis.external.url=redis+sentinel://:p@h:26379/m --set redis.external.existingSecret=s
# Behind the schema (which rejects it first, see bad/tls-no-secret.yaml).
expect_fail "tls.existingSecret is required" --skip-schema-validation --set tls.enabled=true
expect_fail "tls.perPodCertificates needs tls.enabled=true" --set tls.perPodCertificates.enabled=true \
    --set tls.perPodCertificates.issuerName=ca

log "all checks passed in $((SECONDS - start)) s"
