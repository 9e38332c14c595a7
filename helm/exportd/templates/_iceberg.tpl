{{/*
Iceberg catalogs (values `iceberg`) for masters (the leader commits) and servers (they write data
files) alike: the `iceberg.catalogs.<name>` settings of both (tasks/iceberg/catalogs.py).
Non-secret fields go into config.yaml (exportd.iceberg.config, merged by the configYaml helpers);
secrets only into variables from secretKeyRef (exportd.iceberg.env, part of exportd.commonEnv),
never into a ConfigMap. exportd.iceberg.check fails the render on what the processes would refuse
or what would put a secret or a per-pod catalog in the cluster.
*/}}

{{/* The render-time checks of `iceberg`. Argument: the root context. */}}
{{- define "exportd.iceberg.check" -}}
{{- $ice := .Values.iceberg | default dict }}
{{- range $name, $c := ($ice.catalogs | default dict) }}
{{- $at := printf "iceberg.catalogs.%s" $name }}
{{- /* `__` separates a variable's path and names are lowercased when read: see iceberg.env. */}}
{{- if not (regexMatch "^[a-z0-9]+(_[a-z0-9]+)*$" $name) }}
{{- fail (printf "%s: a catalog name is lowercase letters and digits, with single '_' between them (EXPORTD_* variable names are lowercased when read)" $at) }}
{{- end }}
{{- $c = $c | default dict }}
{{- $cred := $c.credentials | default dict }}
{{- if not (has ($c.type | default "sql") (list "sql" "rest")) }}
{{- fail (printf "%s.type %q: sql or rest" $at $c.type) }}
{{- end }}
{{- if not (regexMatch "^(s3://[^/]+|file:///)" ($c.warehouse | default "")) }}
{{- fail (printf "%s.warehouse: s3://bucket/prefix or file:///absolute/path is required" $at) }}
{{- end }}
{{- if and $c.uri $cred.uriKey }}
{{- fail (printf "%s: uri and credentials.uriKey are both set: choose one" $at) }}
{{- end }}
{{- if not (or $c.uri $cred.uriKey) }}
{{- fail (printf "%s: uri is required (or credentials.uriKey: the URI from the Secret)" $at) }}
{{- end }}
{{- if or (regexMatch "^[A-Za-z][A-Za-z0-9+.-]*://[^/@?#]*:[^/@?#]*@" ($c.uri | default "")) (regexMatch "(?i)[?&](password|passwd|token)=" ($c.uri | default "")) }}
{{- fail (printf "%s.uri holds a password: put the URI in a Secret and name it with credentials.existingSecret and credentials.uriKey" $at) }}
{{- end }}
{{- if and (regexMatch "^(?i)sqlite[+:]" ($c.uri | default "")) (not $ice.allowSqlite) }}
{{- fail (printf "%s.uri: a SQLite catalog only works when every master and server sees its file; use a real database (postgresql+psycopg://...) or a REST catalog, or iceberg.allowSqlite=true for a lab" $at) }}
{{- end }}
{{- if and (or $cred.uriKey $cred.tokenKey $cred.accessKeyIdKey $cred.secretAccessKeyKey) (not $cred.existingSecret) }}
{{- fail (printf "%s.credentials: a *Key names a key of credentials.existingSecret, which is empty" $at) }}
{{- end }}
{{- if ne (empty $cred.accessKeyIdKey) (empty $cred.secretAccessKeyKey) }}
{{- fail (printf "%s.credentials: set both accessKeyIdKey and secretAccessKeyKey, or neither" $at) }}
{{- end }}
{{- range $key, $value := ($c.properties | default dict) }}
{{- if regexMatch "(?i)(token|secret|passw|credential|key)" $key }}
{{- fail (printf "%s.properties.%s looks like a secret and would land in a ConfigMap: use credentials.tokenKey for `token`, or an EXPORTD_ICEBERG__CATALOGS__%s__PROPERTIES__<NAME> variable from a secretKeyRef in extraEnv" $at $key (upper $name)) }}
{{- end }}
{{- if or (kindIs "map" $value) (kindIs "slice" $value) }}
{{- fail (printf "%s.properties.%s: a property's value is a string" $at $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The non-secret `iceberg` settings block as JSON, {} without catalogs (config.yaml then has no
`iceberg` key). Property values become strings (YAML's true is pyiceberg's "true").
Argument: the root context.
*/}}
{{- define "exportd.iceberg.config" -}}
{{- include "exportd.iceberg.check" . }}
{{- $out := dict }}
{{- range $name, $c := ((.Values.iceberg).catalogs | default dict) }}
{{- $c = $c | default dict }}
{{- $entry := dict "type" ($c.type | default "sql") "warehouse" $c.warehouse }}
{{- with $c.uri }}
{{- $_ := set $entry "uri" . }}
{{- end }}
{{- $s3 := dict }}
{{- with ($c.s3).endpointUrl }}
{{- $_ := set $s3 "endpoint_url" . }}
{{- end }}
{{- with ($c.s3).region }}
{{- $_ := set $s3 "region" . }}
{{- end }}
{{- if $s3 }}
{{- $_ := set $entry "s3" $s3 }}
{{- end }}
{{- $props := dict }}
{{- range $key, $value := ($c.properties | default dict) }}
{{- $_ := set $props $key (toString $value) }}
{{- end }}
{{- if $props }}
{{- $_ := set $entry "properties" $props }}
{{- end }}
{{- $_ := set $out $name $entry }}
{{- end }}
{{- if $out }}
{{- dict "iceberg" (dict "catalogs" $out) | toJson }}
{{- else }}
{{- "{}" }}
{{- end }}
{{- end }}

{{/*
The catalogs' secrets as variables: each key of credentials that is set gives a raw variable
ICEBERG_<NAME>_<WHAT> from the Secret and, YAML-quoted from it, the setting
EXPORTD_ICEBERG__CATALOGS__<NAME>__<PATH> (the loader lowercases <NAME> back). No raw name is
another's: no suffix below ends another one. Argument: the root context.
*/}}
{{- define "exportd.iceberg.env" -}}
{{- range $name, $c := ((.Values.iceberg).catalogs | default dict) }}
{{- $cred := (($c).credentials | default dict) }}
{{- with $cred.existingSecret }}
{{- $secret := . }}
{{- range $field := list (list "uriKey" "URI" "URI") (list "accessKeyIdKey" "S3_ACCESS_KEY_ID" "S3__ACCESS_KEY_ID") (list "secretAccessKeyKey" "S3_SECRET_ACCESS_KEY" "S3__SECRET_ACCESS_KEY") (list "tokenKey" "TOKEN" "PROPERTIES__TOKEN") }}
{{- with get $cred (index $field 0) }}
{{- $var := printf "ICEBERG_%s_%s" (upper $name) (index $field 1) }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ . }}
- name: EXPORTD_ICEBERG__CATALOGS__{{ upper $name }}__{{ index $field 2 }}
  value: "'$({{ $var }})'"
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
