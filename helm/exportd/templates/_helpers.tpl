{{/*
Names, labels and the pieces masters and servers share. The EXPORTD_* variable names the chart
sets are all here (exportd.commonEnv, exportd.master.env, exportd.server.env): they follow the
processes' settings models (tasks/settings.py: `__` for nesting, unknown top-level keys ignored).
*/}}

{{- define "exportd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "exportd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "exportd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "exportd.labels" -}}
helm.sh/chart: {{ include "exportd.chart" . }}
{{ include "exportd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "exportd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "exportd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "exportd.master.fullname" -}}
{{- printf "%s-master" (include "exportd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "exportd.master.selectorLabels" -}}
{{ include "exportd.selectorLabels" . }}
app.kubernetes.io/component: master
{{- end }}

{{- define "exportd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "exportd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "exportd.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "exportd.cluster" -}}
{{- default .Release.Name .Values.zookeeper.cluster }}
{{- end }}

{{/*
The servers list with serverDefaults merged into each entry, as JSON: {"servers": [...]}.
Checks names (DNS labels, unique) and fails the render on a bad entry.
*/}}
{{- define "exportd.servers" -}}
{{- $out := list }}
{{- $seen := dict }}
{{- range $i, $entry := .Values.servers }}
{{- if not $entry.name }}
{{- fail (printf "servers[%d]: `name` is required" $i) }}
{{- end }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $entry.name) }}
{{- fail (printf "servers[%d].name %q: must be a DNS label (lower case letters, digits, '-')" $i $entry.name) }}
{{- end }}
{{- if hasKey $seen $entry.name }}
{{- fail (printf "servers[%d].name %q: used twice" $i $entry.name) }}
{{- end }}
{{- $_ := set $seen $entry.name true }}
{{- $merged := mustMergeOverwrite (deepCopy $.Values.serverDefaults) (deepCopy $entry) }}
{{- if not $merged.group }}
{{- $_ := set $merged "group" $entry.name }}
{{- end }}
{{- $out = append $out $merged }}
{{- end }}
{{- dict "servers" $out | toJson }}
{{- end }}

{{/*
Variables every pod gets: pod identity, ZooKeeper, Kafka, S3 (+ credentials from an existing
Secret). Argument: the root context. tasks/settings.py parses each EXPORTD_* value as YAML, so
strings go in JSON-quoted (a cluster named "2024" stays a string) and secrets single-quoted.
*/}}
{{- define "exportd.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: EXPORTD_ID
  value: '"$(POD_NAME)"'
- name: EXPORTD_ZOOKEEPER__CLUSTER
  value: {{ include "exportd.cluster" . | toJson | quote }}
{{- with .Values.zookeeper.hosts }}
- name: EXPORTD_ZOOKEEPER__HOSTS
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.kafka.bootstrapServers }}
- name: EXPORTD_KAFKA__BOOTSTRAP_SERVERS
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.kafka.config }}
- name: EXPORTD_KAFKA__CONFIG
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.kafka.credentials.existingSecret }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.credentials.passwordKey }}
- name: EXPORTD_KAFKA__CONFIG__SASL.PASSWORD
  value: "'$(KAFKA_SASL_PASSWORD)'"
{{- end }}
{{- with .Values.kafka.clusters }}
- name: EXPORTD_KAFKA__CLUSTERS
  value: {{ include "exportd.kafkaClusters" . | quote }}
{{- range $name, $cluster := . }}
{{- with ($cluster.credentials).existingSecret }}
{{- $var := printf "KAFKA_%s_SASL_PASSWORD" ($name | upper | replace "-" "_") }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ ($cluster.credentials).passwordKey | default "sasl-password" }}
- name: EXPORTD_KAFKA__CLUSTERS__{{ $name | upper }}__CONFIG__SASL.PASSWORD
  value: "'$({{ $var }})'"
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.s3.endpointUrl }}
- name: EXPORTD_S3__ENDPOINT_URL
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: EXPORTD_S3__REGION
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.s3.credentials.existingSecret }}
# boto3 reads these itself; the settings get them YAML-quoted (masters ignore `s3`).
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.credentials.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.credentials.secretAccessKeyKey }}
- name: EXPORTD_S3__ACCESS_KEY_ID
  value: "'$(AWS_ACCESS_KEY_ID)'"
- name: EXPORTD_S3__SECRET_ACCESS_KEY
  value: "'$(AWS_SECRET_ACCESS_KEY)'"
{{- end }}
- name: PYTHONUNBUFFERED
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}

{{/*
Probes on the pod's `http` port. Argument: dict "probes" <probes values>.
*/}}
{{- define "exportd.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  {{- toYaml .probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  {{- toYaml .probes.readiness | nindent 2 }}
{{- end }}

{{/*
Pod annotations for prometheus.io scraping. Argument: dict "root" $ "port" <int>.
*/}}
{{- define "exportd.scrapeAnnotations" -}}
{{- if .root.Values.podScrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/*
config.yaml of the masters: `config` merged with `master.config`.
*/}}
{{- define "exportd.master.configYaml" -}}
{{- mustMergeOverwrite (deepCopy (.Values.config | default dict)) (deepCopy (.Values.master.config | default dict)) | toYaml }}
{{- end }}

{{/*
config.yaml of one server group. Argument: dict "root" $ "server" <merged entry>.
*/}}
{{- define "exportd.server.configYaml" -}}
{{- mustMergeOverwrite (deepCopy (.root.Values.config | default dict)) (deepCopy (.server.config | default dict)) | toYaml }}
{{- end }}

{{/* kafka.clusters as the settings' JSON: {name: {bootstrap_servers, config}}. */}}
{{- define "exportd.kafkaClusters" -}}
{{- $out := dict -}}
{{- range $name, $cluster := . -}}
{{- $_ := set $out $name (dict "bootstrap_servers" $cluster.bootstrapServers "config" ($cluster.config | default dict)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
