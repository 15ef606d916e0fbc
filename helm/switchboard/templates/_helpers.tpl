{{/*
Chart name, truncated to 63 chars (DNS label limit).
*/}}
{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. Component suffixes ("-relay", "-server", "-client",
"-redis", "-headless") are appended to it, so it is kept to 45 chars to leave
room for them within the 63-char limit.
*/}}
{{- define "switchboard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.relay.fullname" -}}
{{- printf "%s-relay" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.server.fullname" -}}
{{- printf "%s-server" (include "switchboard.fullname" .) }}
{{- end }}

{{/* Headless Service that governs the StatefulSet (stable pod DNS). */}}
{{- define "switchboard.server.headless" -}}
{{- printf "%s-server-headless" (include "switchboard.fullname" .) }}
{{- end }}

{{/* Client-facing Service (TCP NDJSON, port 9501). */}}
{{- define "switchboard.client.fullname" -}}
{{- printf "%s-client" (include "switchboard.fullname" .) }}
{{- end }}

{{- define "switchboard.redis.fullname" -}}
{{- printf "%s-redis" (include "switchboard.fullname" .) }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels (no component).
*/}}
{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" . }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels (no component).
*/}}
{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Per-component labels: call with (dict "ctx" $ "component" "relay").
*/}}
{{- define "switchboard.componentLabels" -}}
{{ include "switchboard.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of a pod template: the selector labels, the component, part-of,
commonLabels and the component's podLabels. No chart version or app
version: a pod-template label that changes with the chart would restart
every server (and kick its users) on a chart-only upgrade. podLabels and
commonLabels must not override a selector label (the chart refuses).
Call with (dict "ctx" $ "component" "server" "podLabels" .Values.server.podLabels "what" "server.podLabels").
*/}}
{{- define "switchboard.podLabels" -}}
{{- $selector := list "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/component" }}
{{- range $what, $labels := dict .what .podLabels "commonLabels" .ctx.Values.commonLabels }}
{{- range $key := $selector }}
{{- if hasKey ($labels | default dict) $key }}
{{- fail (printf "%s must not set %s: it is a selector label of the chart's workloads (their pods would no longer match)" $what $key) }}
{{- end }}
{{- end }}
{{- end }}
{{ include "switchboard.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: switchboard
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- with .podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The default topology spread: soft (ScheduleAnyway) by hostname and zone,
over the pods `selector` (a YAML map of labels) selects.
Call with (dict "values" .Values.server "selector" (include ...)).
*/}}
{{- define "switchboard.topologySpread" -}}
{{- if .values.topologySpreadConstraints }}
{{- toYaml .values.topologySpreadConstraints }}
{{- else if .values.topologySpread.enabled }}
{{- range $key := list "kubernetes.io/hostname" "topology.kubernetes.io/zone" }}
- maxSkew: 1
  topologyKey: {{ $key }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- $.selector | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.componentSelectorLabels" -}}
{{ include "switchboard.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Image tag: .Values.image.tag, or the chart's appVersion when empty.
*/}}
{{- define "switchboard.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag | toString }}
{{- end }}

{{- define "switchboard.image" -}}
{{- include "switchboard.imageRef" (dict "image" .Values.image "tag" (include "switchboard.imageTag" .)) }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag.
Call with (dict "image" .Values.x.image "tag" <tag>). */}}
{{- define "switchboard.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository .tag }}
{{- end }}
{{- end }}

{{/* host:port for a listen address, with an IPv6 host in brackets
([::]:9501). Call with (dict "ctx" $ "port" 9501). */}}
{{- define "switchboard.listen" -}}
{{- $host := .ctx.Values.listenHost }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int .port) }}
{{- else }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}
{{- end }}

{{/*
A Kubernetes memory quantity ("512Mi", "1G", 536870912) in bytes.
*/}}
{{- define "switchboard.bytes" -}}
{{- $q := toString . }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $suffix := trimPrefix $number $q }}
{{- $units := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 }}
{{- if or (not $number) (not (hasKey $units $suffix)) }}
{{- fail (printf "cannot read the memory quantity %q (use e.g. 512Mi, 1Gi, 500M or bytes)" $q) }}
{{- end }}
{{- mulf (float64 $number) (index $units $suffix) | int64 }}
{{- end }}

{{- define "switchboard.mib" -}}
{{- divf . 1048576 | ceil | int64 }}
{{- end }}

{{/*
The worst-case memory of a message server, from its byte budgets:
  32 MiB runtime + 16 MiB de-duplication window (2 x 100,000 message ids)
  + per relay link (relay.replicas + relay.updateStrategy.maxSurge links
    during a rollout; in mode: mesh one per other server, the most there can
    be) 32 MiB HTTP/2 windows (16 MiB each way) + linkQueueBytes
  + in mode: mesh, 128 MiB route cache (up to 1,000,000 names)
  + min(outboundTotalBytes, maxConnections x outboundQueueBytes)
  + maxConnections x (2 x maxLineBytes (read buffer, the message being
    written) + 64 KiB (one write batch) + 2 x clientSendBufferBytes (the
    kernel doubles SO_SNDBUF; cgroup v2 charges socket buffers to the pod)
    + 128 KiB (the default TCP receive buffer) + maxInflight x 256 B
    (outcome lines and pending entries)).
With clientSendBufferBytes 0 (autotuning) the send buffer counts 4 MiB.
*/}}
{{- define "switchboard.server.worstCaseBytes" -}}
{{- $s := .Values.server }}
{{- $sndbuf := int64 $s.clientSendBufferBytes | default 4194304 }}
{{- $perConn := add (mul 2 $s.maxLineBytes) 65536 (mul 2 $sndbuf) 131072 (mul $s.maxInflight 256) }}
{{- $queued := min (int64 $s.outboundTotalBytes) (mul $s.maxConnections $s.outboundQueueBytes) }}
{{- $links := add .Values.relay.replicas .Values.relay.updateStrategy.maxSurge }}
{{- $routes := 0 }}
{{- if eq .Values.mode "mesh" }}
{{- $links = sub (ternary $s.autoscaling.maxReplicas $s.replicas $s.autoscaling.enabled) 1 | max 1 }}
{{- $routes = 134217728 }}
{{- end }}
{{- add 33554432 16777216 $routes (mul $links (add 33554432 $s.linkQueueBytes)) $queued (mul $s.maxConnections $perConn) }}
{{- end }}

{{/*
The worst-case memory of the relay: 32 MiB runtime + 128 MiB route cache
(up to 1,000,000 names) + per linked server (the most servers there can
be: autoscaling.maxReplicas or replicas) relay.linkQueueBytes + 32 MiB
HTTP/2 windows.
*/}}
{{- define "switchboard.relay.worstCaseBytes" -}}
{{- $s := .Values.server }}
{{- $servers := ternary $s.autoscaling.maxReplicas $s.replicas $s.autoscaling.enabled }}
{{- add 33554432 134217728 (mul $servers (add .Values.relay.linkQueueBytes 33554432)) }}
{{- end }}

{{/*
Refuses a memory limit below a worst case. Call with (dict "limit"
<resources.limits.memory or nil> "worst" <bytes> "what" "server").
*/}}
{{- define "switchboard.checkMemoryLimit" -}}
{{- with .limit }}
{{- $limit := include "switchboard.bytes" . | int64 }}
{{- if lt $limit (int64 $.worst) }}
{{- fail (printf "%s.resources.limits.memory (%s) is below the worst case of its byte budgets, %d MiB (see the README, Operations: capacity): raise it or lower the budgets, or a slow reader can get the pod OOM-killed" $.what (toString .) (include "switchboard.mib" $.worst | int64)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The server's lame duck in ms: server.lameDuckMs, or (null) sized to the
readiness probe: periodSeconds x (failureThreshold + 1), the time for the
probe to notice NOT_SERVING plus one period; 5 s without a readiness probe.
*/}}
{{- define "switchboard.server.lameDuckMs" -}}
{{- $s := .Values.server }}
{{- $p := $s.readinessProbe }}
{{- if not (kindIs "invalid" $s.lameDuckMs) }}
{{- int64 $s.lameDuckMs }}
{{- else if $p.enabled }}
{{- mul (default 10 $p.periodSeconds) (add (default 3 $p.failureThreshold) 1) 1000 }}
{{- else }}
{{- 5000 }}
{{- end }}
{{- end }}

{{/* Whole seconds, rounded up, of a duration in ms. */}}
{{- define "switchboard.ceilSeconds" -}}
{{- div (add (int64 .) 999) 1000 }}
{{- end }}

{{- define "switchboard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "switchboard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Redis URL handed to both binaries as SWITCHBOARD_REDIS_URL.
- bundled:  redis://<fullname>-redis:<port>
- external: redis.external.url: redis:// or rediss:// (one Redis),
  redis+sentinel://S1:P1,S2:P2/MASTERNAME (Sentinel), redis+cluster://H1:P1,...
  (Redis Cluster), each also rediss+... for TLS. When
  redis.external.existingSecret is set, the password is injected as env
  REDIS_PASSWORD (see "switchboard.redisEnv") and referenced here through
  Kubernetes' $(VAR) interpolation, so it never appears in the manifest:
    redis://host:6379/0  ->  redis://[username]:$(REDIS_PASSWORD)@host:6379/0
  (for Sentinel and Cluster it is the data nodes' password). The sentinels'
  own password (redis.external.sentinelPasswordSecret) likewise becomes
  ?sentinel_password=$(REDIS_SENTINEL_PASSWORD).
  Passwords must be URL-safe (or stored percent-encoded in the Secret).
*/}}
{{- define "switchboard.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s%s:%d" (ternary ":$(REDIS_PASSWORD)@" "" .Values.redis.auth.enabled) (include "switchboard.redis.fullname" .) (int .Values.redis.port) }}
{{- else }}
{{- $e := .Values.redis.external }}
{{- $url := required "redis.external.url is required when redis.enabled=false (e.g. redis://redis.example:6379)" $e.url }}
{{- $schemeRe := "^rediss?(\\+(sentinel|cluster))?://" }}
{{- if not (regexMatch (printf "%s[^\\s]+$" $schemeRe) $url) }}
{{- fail (printf "redis.external.url must start with redis://, rediss://, redis+sentinel:// or redis+cluster:// (got %q)" $url) }}
{{- end }}
{{- if and $e.caSecret (not (hasPrefix "rediss" $url)) }}
{{- fail "redis.external.caSecret needs a rediss:// (or rediss+sentinel://, rediss+cluster://) redis.external.url (the CA only verifies TLS)" }}
{{- end }}
{{- if and $e.sentinelPasswordSecret (not (regexMatch "^rediss?\\+sentinel://" $url)) }}
{{- fail "redis.external.sentinelPasswordSecret needs a redis+sentinel:// redis.external.url" }}
{{- end }}
{{- if $e.existingSecret }}
{{- $rest := regexReplaceAll $schemeRe $url "" }}
{{- if contains "@" $rest }}
{{- fail "redis.external.url must not contain credentials when redis.external.existingSecret is set (use redis.external.username for an ACL user)" }}
{{- end }}
{{- $url = printf "%s%s:$(REDIS_PASSWORD)@%s" (regexFind $schemeRe $url) (default "" $e.username) $rest }}
{{- end }}
{{- if $e.sentinelPasswordSecret }}
{{- $url = printf "%s%ssentinel_password=$(REDIS_SENTINEL_PASSWORD)" $url (ternary "&" "?" (contains "?" $url)) }}
{{- end }}
{{- $url }}
{{- end }}
{{- end }}

{{/*
Env entries for Redis: REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD (from
existing Secrets) MUST come before SWITCHBOARD_REDIS_URL for $(VAR) to expand.
*/}}
{{- define "switchboard.redisEnv" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretPasswordKey }}
{{- else if and .Values.redis.enabled .Values.redis.auth.enabled }}
{{- include "switchboard.redis.passwordEnv" (dict "ctx" . "name" "REDIS_PASSWORD") }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.external.sentinelPasswordSecret }}
- name: REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.sentinelPasswordSecret }}
      key: {{ .Values.redis.external.sentinelPasswordKey }}
{{- end }}
- name: SWITCHBOARD_REDIS_URL
  value: {{ include "switchboard.redisUrl" . | quote }}
- name: SWITCHBOARD_REDIS_CONNECT_TIMEOUT_MS
  value: {{ .Values.redisConnectTimeoutMs | quote }}
{{- end }}

{{/* The bundled Redis's password (redis.auth.*). */}}
{{- define "switchboard.redis.secretName" -}}
{{- default (printf "%s-redis" (include "switchboard.fullname" .)) .Values.redis.auth.existingSecret }}
{{- end }}

{{/* An env entry `name` holding the bundled Redis's password.
Call with (dict "ctx" $ "name" "REDIS_PASSWORD"). */}}
{{- define "switchboard.redis.passwordEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "switchboard.redis.secretName" .ctx }}
      key: {{ .ctx.Values.redis.auth.secretKey }}
{{- end }}

{{/*
Env shared by relay and server: logging and metrics.
Call with (dict "ctx" $ "metricsPort" <port>).
*/}}
{{- define "switchboard.commonEnv" -}}
- name: RUST_LOG
  value: {{ .ctx.Values.rustLog | quote }}
- name: SWITCHBOARD_LOG_FORMAT
  value: {{ .ctx.Values.logFormat | quote }}
{{- if .ctx.Values.metrics.enabled }}
- name: SWITCHBOARD_METRICS_LISTEN
  value: {{ include "switchboard.listen" (dict "ctx" .ctx "port" .metricsPort) | quote }}
{{- end }}
{{- end }}

{{/*
A probe from values: {enabled, initialDelaySeconds, periodSeconds, ...};
rendered as a native gRPC probe on the given port.
Call with (dict "probe" .Values.server.livenessProbe "port" 9601).
*/}}
{{- define "switchboard.grpcProbe" -}}
grpc:
  port: {{ .port }}
  {{- with .probe.service }}
  service: {{ . | quote }}
  {{- end }}
{{- $p := omit .probe "enabled" "service" }}
{{- with $p }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------ security */}}

{{/* Secret holding the client login-token secret (auth.*). */}}
{{- define "switchboard.auth.secretName" -}}
{{- default (printf "%s-auth" (include "switchboard.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/* Secret holding the Admin API bearer token (admin.auth.*). */}}
{{- define "switchboard.admin.secretName" -}}
{{- default (printf "%s-admin" (include "switchboard.fullname" .)) .Values.admin.auth.existingSecret }}
{{- end }}

{{/* Secret holding the link token (link.auth.*). */}}
{{- define "switchboard.link.secretName" -}}
{{- default (printf "%s-link" (include "switchboard.fullname" .)) .Values.link.auth.existingSecret }}
{{- end }}

{{/* Name every node verifies in its peers' certificates (tls.serverName). */}}
{{- define "switchboard.tls.serverName" -}}
{{- default (include "switchboard.relay.fullname" .) .Values.tls.serverName }}
{{- end }}

{{/* The TLS Secret; required when tls.enabled (the schema checks it too). */}}
{{- define "switchboard.tls.secretName" -}}
{{- required "tls.existingSecret is required when tls.enabled=true (a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt, e.g. from cert-manager)" .Values.tls.existingSecret }}
{{- end }}

{{/*
The base64 value of a chart-generated Secret's key: kept from the Secret
already in the cluster (lookup), so upgrades do not rotate it; otherwise
48 random alphanumerics. `helm template` and `--dry-run=client` cannot look
up, so they always show a fresh random value.
Call with (dict "ctx" $ "name" <secret name> "key" <key>).
*/}}
{{- define "switchboard.generatedSecretValue" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- $data := dig "data" (dict) ($existing | default (dict)) }}
{{- if hasKey $data .key }}
{{- index $data .key }}
{{- else }}
{{- randAlphaNum 48 | b64enc }}
{{- end }}
{{- end }}

{{/*
A chart-generated Secret with one key (a "---" document), or, when an
existing Secret is named, only the check of that one.
Call with (dict "ctx" $ "existing" <existing Secret or ""> "name" <name>
"key" <key> "what" <values path, for errors> "component" <label>
"comment" <what it holds>).
*/}}
{{- define "switchboard.chartSecret" -}}
{{- if .existing }}
{{- include "switchboard.checkExistingSecret" (dict "ctx" .ctx "name" .existing "key" .key "what" .what) }}
{{- else }}
---
# {{ .comment }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "switchboard.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  {{ .key }}: {{ include "switchboard.generatedSecretValue" (dict "ctx" .ctx "name" .name "key" .key) | quote }}
{{- end }}
{{- end }}

{{/*
Refuses an existing Secret that is visible (real install/upgrade, not
`helm template`) but lacks the key or holds fewer than 16 bytes, which the
binaries would refuse at start (CrashLoopBackOff).
Call with (dict "ctx" $ "name" <secret> "key" <key> "what" "auth.existingSecret").
*/}}
{{- define "switchboard.checkExistingSecret" -}}
{{- $s := lookup "v1" "Secret" .ctx.Release.Namespace .name }}
{{- if $s }}
{{- $data := dig "data" (dict) $s }}
{{- if not (hasKey $data .key) }}
{{- fail (printf "%s %q has no key %q" .what .name .key) }}
{{- end }}
{{- if lt (len (trim (b64dec (index $data .key)))) 16 }}
{{- fail (printf "%s %q: key %q must hold at least 16 bytes (the binaries refuse shorter)" .what .name .key) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Env for the internal gRPC plane, shared by relay and servers: Admin token,
link token, TLS, plaintext health port, Redis CA.
*/}}
{{- define "switchboard.grpcSecurityEnv" -}}
{{- if .Values.admin.auth.enabled }}
- name: SWITCHBOARD_ADMIN_TOKEN_FILE
  value: /etc/switchboard/admin/token
{{- end }}
{{- if .Values.link.auth.enabled }}
- name: SWITCHBOARD_LINK_TOKEN_FILE
  value: /etc/switchboard/link/token
{{- end }}
{{- if .Values.tls.enabled }}
- name: SWITCHBOARD_TLS_CERT
  value: /etc/switchboard/tls/tls.crt
- name: SWITCHBOARD_TLS_KEY
  value: /etc/switchboard/tls/tls.key
- name: SWITCHBOARD_TLS_CA
  value: /etc/switchboard/tls/ca.crt
{{- if .Values.tls.clientAuth }}
{{- /* Set only when true: the binaries treat the variable's presence as the flag. */}}
- name: SWITCHBOARD_TLS_CLIENT_AUTH
  value: "true"
{{- end }}
- name: SWITCHBOARD_TLS_SERVER_NAME
  value: {{ include "switchboard.tls.serverName" . | quote }}
- name: SWITCHBOARD_HEALTH_LISTEN
  value: {{ include "switchboard.listen" (dict "ctx" . "port" .Values.tls.healthPort) | quote }}
{{- end }}
{{- if and (not .Values.redis.enabled) .Values.redis.external.caSecret }}
- name: SWITCHBOARD_REDIS_CA
  value: /etc/switchboard/redis-ca/ca.crt
{{- end }}
{{- end }}

{{/* volumeMounts matching "switchboard.grpcSecurityEnv" (plus auth for servers). */}}
{{- define "switchboard.securityMounts" -}}
{{- if and .server .ctx.Values.auth.enabled }}
- name: auth-secret
  mountPath: /etc/switchboard/auth
  readOnly: true
{{- end }}
{{- if .ctx.Values.admin.auth.enabled }}
- name: admin-token
  mountPath: /etc/switchboard/admin
  readOnly: true
{{- end }}
{{- if .ctx.Values.link.auth.enabled }}
- name: link-token
  mountPath: /etc/switchboard/link
  readOnly: true
{{- end }}
{{- if .ctx.Values.tls.enabled }}
- name: tls
  mountPath: /etc/switchboard/tls
  readOnly: true
{{- end }}
{{- if and (not .ctx.Values.redis.enabled) .ctx.Values.redis.external.caSecret }}
- name: redis-ca
  mountPath: /etc/switchboard/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* volumes matching "switchboard.securityMounts". Call with (dict "ctx" $ "server" bool). */}}
{{- define "switchboard.securityVolumes" -}}
{{- $v := .ctx.Values }}
{{- if and .server $v.auth.enabled }}
- name: auth-secret
  secret:
    secretName: {{ include "switchboard.auth.secretName" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ $v.auth.secretKey }}
        path: secret
{{- end }}
{{- if $v.admin.auth.enabled }}
- name: admin-token
  secret:
    secretName: {{ include "switchboard.admin.secretName" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ $v.admin.auth.secretKey }}
        path: token
{{- end }}
{{- if $v.link.auth.enabled }}
- name: link-token
  secret:
    secretName: {{ include "switchboard.link.secretName" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ $v.link.auth.secretKey }}
        path: token
{{- end }}
{{- if and .server $v.tls.perPodCertificates.enabled }}
{{- include "switchboard.perPodTlsVolume" .ctx }}
{{- else if $v.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "switchboard.tls.secretName" .ctx }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if and (not $v.redis.enabled) $v.redis.external.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ $v.redis.external.caSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.redis.external.caKey }}
        path: ca.crt
{{- end }}
{{- end }}

{{/*
The message servers' TLS volume with tls.perPodCertificates: cert-manager's
csi-driver issues each pod its own certificate (tls.crt, tls.key, ca.crt, the
same files as the Secret's), for the name every node verifies, with the
pod's server identity as URI SAN (csi-driver fills in ${POD_NAME} and
${POD_NAMESPACE}; the pod name is the server id).
*/}}
{{- define "switchboard.perPodTlsVolume" -}}
{{- $p := .Values.tls.perPodCertificates }}
{{- if not .Values.tls.enabled }}
{{- fail "tls.perPodCertificates needs tls.enabled=true (the relay serves with tls.existingSecret)" }}
{{- end }}
- name: tls
  csi:
    driver: csi.cert-manager.io
    readOnly: true
    volumeAttributes:
      csi.cert-manager.io/issuer-name: {{ required "tls.perPodCertificates.issuerName is required" $p.issuerName | quote }}
      csi.cert-manager.io/issuer-kind: {{ $p.issuerKind | quote }}
      csi.cert-manager.io/issuer-group: {{ $p.issuerGroup | quote }}
      csi.cert-manager.io/dns-names: {{ include "switchboard.tls.serverName" . | quote }}
      csi.cert-manager.io/uri-sans: {{ printf "spiffe://%s/ns/${POD_NAMESPACE}/switchboard-server/${POD_NAME}" $p.trustDomain | quote }}
      {{- /* Every node is server and client (mutual TLS). */}}
      csi.cert-manager.io/key-usages: "server auth,client auth,digital signature"
{{- end }}

{{/*
Port the gRPC probes use: the plaintext health port when TLS is on (the
kubelet's gRPC probes cannot speak TLS), else the gRPC port itself.
*/}}
{{- define "switchboard.probePort" -}}
{{- if .ctx.Values.tls.enabled }}{{ .ctx.Values.tls.healthPort }}{{ else }}{{ .grpcPort }}{{ end }}
{{- end }}
