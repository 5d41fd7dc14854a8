{{/* Kept to the subset of Helm's template language that tests/harness/helm_render.py renders
     (no helm binary is available to the tests): include/define, if/else, range, with, toYaml, nindent,
     quote, default, required, sha256sum, b64enc, printf, int, gt. Numbers from values are
     float64 in helm: printf takes %v for them, comparisons go through int. */}}
{{- define "nodewarden.labels" -}}
app.kubernetes.io/name: nodewarden
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "nodewarden.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) | quote }}
{{- end }}

{{- define "nodewarden.tokenSecret" -}}
{{ .Values.collector.existingSecret | default (printf "%s-token" .Release.Name) }}
{{- end }}

{{- define "nodewarden.collectorAddress" -}}
{{ printf "%s-collector.%s.svc:%v" .Release.Name .Release.Namespace .Values.collector.grpcPort }}
{{- end }}

{{/* The agent's config.yaml: the values' agent.config as it is. The paths this chart decides (mounts, the
     collector's Service, the node name) are set by NODEWARDEN_<SECTION>_<KEY> variables in the DaemonSet,
     which win over the file (agent/config.py load), so no merge of two YAML documents is needed. */}}
{{- define "nodewarden.agentConfig" -}}
{{ toYaml .Values.agent.config }}
{{- end }}

{{- define "nodewarden.collectorConfig" -}}
collector:
  listen: [{{ printf "0.0.0.0:%v" .Values.collector.grpcPort | quote }}]
  metrics_listen: {{ printf "0.0.0.0:%v" .Values.collector.metricsPort | quote }}
  token_file: /etc/nodewarden/token/token
  {{- if .Values.collector.postgres.url }}
  store: {{ .Values.collector.postgres.url | quote }}
  {{- else }}
  db: /var/lib/nodewarden/events.db
  {{- end }}
  {{- if .Values.collector.nats.url }}
  nats: {{ .Values.collector.nats.url | quote }}
  nats_stream: {{ .Values.collector.nats.stream | quote }}
  {{- end }}
  {{- if .Values.console.enabled }}
  http_listen: {{ printf "0.0.0.0:%v" .Values.console.port | quote }}
  {{- end }}
  retention_age_s: {{ .Values.collector.retentionAge | quote }}
  retention_bytes: {{ .Values.collector.retentionSize | quote }}
  {{- with .Values.collector.extraConfig }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
