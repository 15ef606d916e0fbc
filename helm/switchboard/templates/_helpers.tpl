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
- external: redis.external.url (redis:// or rediss://). When
  redis.external.existingSecret is set, the password is injected as env
  REDIS_PASSWORD (see "switchboard.redisEnv") and referenced here through
  Kubernetes' $(VAR) interpolation, so it never appears in the manifest:
    redis://host:6379/0  ->  redis://[username]:$(REDIS_PASSWORD)@host:6379/0
  The password must be URL-safe (or stored percent-encoded in the Secret).
*/}}
{{- define "switchboard.redisUrl" -}}
{{- if .Values.redis.enabled }}
{{- printf "redis://%s:%d" (include "switchboard.redis.fullname" .) (int .Values.redis.port) }}
{{- else }}
{{- $url := required "redis.external.url is required when redis.enabled=false (e.g. redis://redis.example:6379)" .Values.redis.external.url }}
{{- if not (regexMatch "^rediss?://[^\\s]+$" $url) }}
{{- fail (printf "redis.external.url must start with redis:// or rediss:// (got %q)" $url) }}
{{- end }}
{{- if .Values.redis.external.existingSecret }}
{{- $rest := regexReplaceAll "^rediss?://" $url "" }}
{{- if contains "@" $rest }}
{{- fail "redis.external.url must not contain credentials when redis.external.existingSecret is set (use redis.external.username for an ACL user)" }}
{{- end }}
{{- $scheme := regexFind "^rediss?://" $url }}
{{- printf "%s%s:$(REDIS_PASSWORD)@%s" $scheme (default "" .Values.redis.external.username) $rest }}
{{- else }}
{{- $url }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Env entries for Redis: REDIS_PASSWORD (when an existing Secret is used)
MUST come before SWITCHBOARD_REDIS_URL for $(REDIS_PASSWORD) to expand.
*/}}
{{- define "switchboard.redisEnv" -}}
{{- if and (not .Values.redis.enabled) .Values.redis.external.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.external.existingSecret }}
      key: {{ .Values.redis.external.existingSecretPasswordKey }}
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
