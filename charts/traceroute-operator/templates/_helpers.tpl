{{/* Chart name, bounded to the 63 characters of a label value. */}}
{{- define "traceroute-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name alone when it already contains the chart name. */}}
{{- define "traceroute-operator.fullname" -}}
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

{{/* Name of the bundled Pushgateway's objects (Deployment, Service, PVC). */}}
{{- define "traceroute-operator.pushgatewayName" -}}
{{- printf "%s-pushgateway" (include "traceroute-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "traceroute-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "traceroute-operator.labels" -}}
helm.sh/chart: {{ include "traceroute-operator.chart" . }}
app.kubernetes.io/name: {{ include "traceroute-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: traceroute-operator
{{- end }}

{{- define "traceroute-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "traceroute-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "traceroute-operator.pushgatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "traceroute-operator.name" . }}-pushgateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: pushgateway
{{- end }}

{{- define "traceroute-operator.pushgatewayLabels" -}}
helm.sh/chart: {{ include "traceroute-operator.chart" . }}
{{ include "traceroute-operator.pushgatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: traceroute-operator
{{- end }}

{{- define "traceroute-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "traceroute-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference from {registry, repository, tag, digest}; `image.registry` replaces
every image's own registry; a digest pins the image (the tag is then only informative
and left out, so a moved tag can never change what runs).
Call: include "traceroute-operator.image" (dict "image" .Values.operator.image "root" .)
*/}}
{{- define "traceroute-operator.image" -}}
{{- $registry := .root.Values.image.registry | default .image.registry -}}
{{- $repository := .image.repository -}}
{{- if $registry }}{{ $repository = printf "%s/%s" (trimSuffix "/" $registry) .image.repository }}{{ end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/* URL the probes push to and the operator deletes groups from. */}}
{{/* Name of one bundled Pushgateway shard: the plain name when there is one shard. */}}
{{- define "traceroute-operator.pushgatewayShardName" -}}
{{- $name := include "traceroute-operator.pushgatewayName" .root -}}
{{- if eq (int .root.Values.pushgateway.shards) 1 -}}
{{- $name -}}
{{- else -}}
{{- printf "%s-%d" ($name | trunc 60 | trimSuffix "-") (int .shard) -}}
{{- end -}}
{{- end }}

{{/* Comma-separated shard URLs for TRACEROUTE_PUSHGATEWAY_SHARDS; empty with one gateway. */}}
{{- define "traceroute-operator.pushgatewayShardURLs" -}}
{{- $pg := .Values.pushgateway -}}
{{- if and $pg.enabled (gt (int $pg.shards) 1) -}}
{{- $urls := list -}}
{{- range $shard := until (int $pg.shards) -}}
{{- $urls = append $urls (printf "http://%s.%s.svc:%d" (include "traceroute-operator.pushgatewayShardName" (dict "root" $ "shard" $shard)) $.Release.Namespace (int $pg.service.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else if not $pg.enabled -}}
{{- join "," $pg.shardURLs -}}
{{- end -}}
{{- end }}

{{- define "traceroute-operator.pushgatewayUrl" -}}
{{- if .Values.pushgateway.enabled -}}
{{- printf "http://%s.%s.svc:%d" (include "traceroute-operator.pushgatewayShardName" (dict "root" . "shard" 0)) .Release.Namespace (int .Values.pushgateway.service.port) -}}
{{- else if .Values.pushgateway.shardURLs -}}
{{- first .Values.pushgateway.shardURLs -}}
{{- else -}}
{{- required "pushgateway.url is required when pushgateway.enabled is false" .Values.pushgateway.url -}}
{{- end -}}
{{- end }}

{{/*
Resources of the bundled Pushgateway: memory from pushgateway.expectedProbes (32Mi plus
128Ki per probe group, measured 0.1 MiB with the probe's exposition; limit twice the
request, the heap Go's GC lets grow to), then whatever pushgateway.resources sets.
*/}}
{{- define "traceroute-operator.pushgatewayResources" -}}
{{- $pg := .Values.pushgateway -}}
{{- /* each shard holds about 1/shards of the probes */}}
{{- $perShard := div (add (int $pg.expectedProbes) (sub (int $pg.shards) 1)) (max 1 (int $pg.shards)) -}}
{{- $requestMi := add 32 (div (add $perShard 7) 8) -}}
{{- $derived := dict "requests" (dict "memory" (printf "%dMi" $requestMi)) "limits" (dict "memory" (printf "%dMi" (mul 2 $requestMi))) -}}
{{- toYaml (mergeOverwrite $derived (deepCopy $pg.resources)) -}}
{{- end }}

{{/* Namespace of the generated Grafana dashboard ConfigMaps. */}}
{{- define "traceroute-operator.dashboardsNamespace" -}}
{{- .Values.monitoring.dashboards.namespace | default .Release.Namespace -}}
{{- end }}

{{/* key=value,key2=value2 as the operator's environment expects label maps (sorted keys). */}}
{{- define "traceroute-operator.labelList" -}}
{{- $items := list -}}
{{- range $key, $value := . -}}
{{- $items = append $items (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $items -}}
{{- end }}

{{/* The restricted Pod Security Standard, for every container of the chart. */}}
{{- define "traceroute-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "traceroute-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65534
runAsGroup: 65534
fsGroup: 65534
seccompProfile:
  type: RuntimeDefault
{{- end }}
