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
Secret), the Iceberg catalogs' secrets. Argument: the root context. tasks/settings.py parses each EXPORTD_* value as YAML, so
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
{{- include "exportd.iceberg.env" . }}
{{- if .Values.kafka.allowUnlistedClusters }}
- name: EXPORTD_KAFKA__ALLOW_UNLISTED_CLUSTERS
  value: "true"
{{- end }}
{{- with .Values.egress }}
{{- with .httpAllowNetworks }}
- name: EXPORTD_EGRESS__HTTP_ALLOW_NETWORKS
  value: {{ toJson . | quote }}
{{- end }}
{{- with .s3Endpoints }}
- name: EXPORTD_EGRESS__S3_ENDPOINTS
  value: {{ toJson . | quote }}
{{- end }}
{{- with .fileRoot }}
- name: EXPORTD_EGRESS__FILE_ROOT
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}
- name: PYTHONUNBUFFERED
  value: "1"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}

{{/*
Probes on the pod's `http` port. Argument: dict "probes" <probes values> and optionally
"scheme" HTTPS (masters over TLS) or "exec" <base URL> (an API on the pod's loopback only: the
probe runs inside the pod; it checks liveness, not the certificate).
*/}}
{{- define "exportd.probes" -}}
{{- if .exec }}
livenessProbe:
  exec:
    command: {{ list "python" "-c" (printf "import ssl, urllib.request as u; u.urlopen('%s/healthz', timeout=2, context=ssl._create_unverified_context())" .exec) | toJson }}
  {{- toYaml .probes.liveness | nindent 2 }}
readinessProbe:
  exec:
    command: {{ list "python" "-c" (printf "import ssl, urllib.request as u; u.urlopen('%s/readyz', timeout=2, context=ssl._create_unverified_context())" .exec) | toJson }}
  {{- toYaml .probes.readiness | nindent 2 }}
{{- else }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
    {{- with .scheme }}
    scheme: {{ . }}
    {{- end }}
  {{- toYaml .probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
    {{- with .scheme }}
    scheme: {{ . }}
    {{- end }}
  {{- toYaml .probes.readiness | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Pod annotations for prometheus.io scraping. Argument: dict "root" $ "port" <int>, optionally
"scheme" https (masters over TLS).
*/}}
{{- define "exportd.scrapeAnnotations" -}}
{{- if .root.Values.podScrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- with .scheme }}
prometheus.io/scheme: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
config.yaml of the masters: `config`, then the non-secret `iceberg` block (_iceberg.tpl), then
`master.config` merged over it.
*/}}
{{- define "exportd.master.configYaml" -}}
{{- mustMergeOverwrite (deepCopy (.Values.config | default dict)) (include "exportd.iceberg.config" . | fromJson) (deepCopy (.Values.master.config | default dict)) | toYaml }}
{{- end }}

{{/*
config.yaml of one server group: `config`, the `iceberg` block, the group's `config`.
Argument: dict "root" $ "server" <merged entry>.
*/}}
{{- define "exportd.server.configYaml" -}}
{{- mustMergeOverwrite (deepCopy (.root.Values.config | default dict)) (include "exportd.iceberg.config" .root | fromJson) (deepCopy (.server.config | default dict)) | toYaml }}
{{- end }}

{{/* kafka.clusters as the settings' JSON: {name: {bootstrap_servers, config}}. */}}
{{- define "exportd.kafkaClusters" -}}
{{- $out := dict -}}
{{- range $name, $cluster := . -}}
{{- $_ := set $out $name (dict "bootstrap_servers" $cluster.bootstrapServers "config" ($cluster.config | default dict)) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
The render-time refusals of the security model (docs/SECURITY.md): no API without tokens unless
auth.none says so, no processes without certificates unless tls.insecure says so.
*/}}
{{- define "exportd.securityChecks" -}}
{{- $auth := .Values.auth }}
{{- if and (not $auth.existingSecret) (not $auth.none) }}
{{- fail "auth.existingSecret is required: the API refuses to run without tokens (set auth.none=true for an API without auth, served on the pods' loopback only)" }}
{{- end }}
{{- if and $auth.existingSecret $auth.none }}
{{- fail "auth.none=true and auth.existingSecret are both set: choose one" }}
{{- end }}
{{- range $name := list $auth.readTokenName $auth.adminTokenName }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9_.-]{0,63}$" $name) }}
{{- fail (printf "auth token name %q: lower case letters, digits, '-', '_' and '.' only" $name) }}
{{- end }}
{{- end }}
{{- $zk := .Values.zookeeper.auth }}
{{- if not $zk.existingSecret }}
{{- fail "zookeeper.auth.existingSecret is required: masters and servers refuse an unauthenticated ZooKeeper (`python -m tools.infra.zkauth secret NAME` prints a Secret with random passwords)" }}
{{- end }}
{{- if eq $zk.masterUsername $zk.serverUsername }}
{{- fail "zookeeper.auth.masterUsername and serverUsername must differ: the ACLs tell masters and servers apart by them" }}
{{- end }}
{{- $tls := .Values.tls }}
{{- if $tls.insecure }}
{{- if or $tls.master.existingSecret $tls.certManager.enabled }}
{{- fail "tls.insecure=true cannot be combined with tls.master.existingSecret or tls.certManager.enabled" }}
{{- end }}
{{- else }}
{{- if not (or $tls.master.existingSecret $tls.certManager.enabled) }}
{{- fail "TLS certificates are required: set tls.master.existingSecret or tls.certManager.enabled, or tls.insecure=true for a lab without TLS" }}
{{- end }}
{{- if not (or $tls.servers.volume $tls.certManager.enabled) }}
{{- fail "servers need a certificate each, naming the pod: set tls.certManager.enabled (cert-manager's csi-driver) or tls.servers.volume, or tls.insecure=true for a lab without TLS" }}
{{- end }}
{{- if and $tls.certManager.enabled (not $tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding the masters' certificate (existing, or the one cert-manager writes). */}}
{{- define "exportd.master.tlsSecret" -}}
{{- default (printf "%s-tls" (include "exportd.master.fullname" .)) .Values.tls.master.existingSecret }}
{{- end }}

{{/* The `tls:` settings block as EXPORTD_TLS__* variables (files under /etc/exportd-tls). */}}
{{- define "exportd.tlsEnv" -}}
{{- if .Values.tls.insecure }}
- name: EXPORTD_TLS__INSECURE
  value: "true"
{{- else }}
- name: EXPORTD_TLS__CA_FILE
  value: '"/etc/exportd-tls/ca.crt"'
- name: EXPORTD_TLS__CERT_FILE
  value: '"/etc/exportd-tls/tls.crt"'
- name: EXPORTD_TLS__KEY_FILE
  value: '"/etc/exportd-tls/tls.key"'
{{- end }}
{{- end }}

{{/* The tls volume of a server pod: its own certificate from cert-manager's csi-driver. */}}
{{- define "exportd.server.tlsVolume" -}}
{{- $cm := .Values.tls.certManager }}
{{- if .Values.tls.servers.volume }}
- name: tls
  {{- toYaml .Values.tls.servers.volume | nindent 2 }}
{{- else }}
- name: tls
  csi:
    driver: csi.cert-manager.io
    readOnly: true
    volumeAttributes:
      csi.cert-manager.io/issuer-name: {{ $cm.issuerRef.name | quote }}
      csi.cert-manager.io/issuer-kind: {{ $cm.issuerRef.kind | quote }}
      csi.cert-manager.io/issuer-group: {{ $cm.issuerRef.group | quote }}
      csi.cert-manager.io/uri-sans: {{ printf "exportd://%s/server/${POD_NAME}" (include "exportd.cluster" .) | quote }}
      csi.cert-manager.io/dns-names: "${POD_NAME}.${POD_NAMESPACE}"
      csi.cert-manager.io/key-usages: "server auth,client auth,digital signature"
      csi.cert-manager.io/duration: {{ $cm.duration | quote }}
      csi.cert-manager.io/renew-before: {{ $cm.renewBefore | quote }}
      csi.cert-manager.io/fs-group: {{ .Values.podSecurityContext.fsGroup | default 10001 | quote }}
{{- end }}
{{- end }}

{{/*
The ZooKeeper credential of one role as EXPORTD_ZOOKEEPER__* variables, from the existing Secret:
the role's own username and password, and the OTHER role's digest (named in the ACLs the process
creates). Argument: dict "root" $ "role" "master"|"server". Values single-quoted: taken verbatim.
*/}}
{{- define "exportd.zookeeperEnv" -}}
{{- $auth := .root.Values.zookeeper.auth }}
{{- $own := ternary "master" "server" (eq .role "master") }}
{{- $other := ternary "server" "master" (eq .role "master") }}
- name: ZOOKEEPER_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ get $auth (printf "%sPasswordKey" $own) }}
- name: ZOOKEEPER_{{ upper $other }}_DIGEST
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ get $auth (printf "%sDigestKey" $other) }}
- name: EXPORTD_ZOOKEEPER__USERNAME
  value: {{ get $auth (printf "%sUsername" $own) | toJson | quote }}
- name: EXPORTD_ZOOKEEPER__PASSWORD
  value: "'$(ZOOKEEPER_PASSWORD)'"
- name: EXPORTD_ZOOKEEPER__{{ upper $other }}_DIGEST
  value: "'$(ZOOKEEPER_{{ upper $other }}_DIGEST)'"
{{- with .root.Values.zookeeper.tls.existingSecret }}
- name: EXPORTD_ZOOKEEPER__CA_FILE
  value: '"/etc/exportd-zk-tls/ca.crt"'
{{- if $.root.Values.zookeeper.tls.clientCertificate }}
- name: EXPORTD_ZOOKEEPER__CERT_FILE
  value: '"/etc/exportd-zk-tls/tls.crt"'
- name: EXPORTD_ZOOKEEPER__KEY_FILE
  value: '"/etc/exportd-zk-tls/tls.key"'
{{- end }}
{{- end }}
{{- end }}

{{/* The mount of ZooKeeper's TLS Secret, when there is one. Argument: the root context. */}}
{{- define "exportd.zookeeperTlsMount" -}}
{{- if .Values.zookeeper.tls.existingSecret }}
- name: zookeeper-tls
  mountPath: /etc/exportd-zk-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "exportd.zookeeperTlsVolume" -}}
{{- with .Values.zookeeper.tls.existingSecret }}
- name: zookeeper-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}
