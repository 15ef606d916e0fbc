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
{{- printf "%s:%s" .Values.image.repository (include "switchboard.imageTag" .) }}
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
{{- printf "redis://%s:%d" (include "switchboard.redis.fullname" .) (int .Values.redis.port) }}
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
  value: {{ printf "0.0.0.0:%d" (int .metricsPort) | quote }}
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
  value: {{ printf "0.0.0.0:%d" (int .Values.tls.healthPort) | quote }}
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
