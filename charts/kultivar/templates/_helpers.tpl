{{/* Names, labels and derived settings shared by the templates. */}}

{{- define "kultivar.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kultivar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kultivar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kultivar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kultivar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kultivar.labels" -}}
helm.sh/chart: {{ include "kultivar.chart" . }}
{{ include "kultivar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kultivar
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kultivar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kultivar.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. Argument: dict "image" .Values.x "root" $ */}}
{{- define "kultivar.image" -}}
{{- $image := .image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The artifact store URL given to the operator (KULTIVAR_STORE_URL). */}}
{{- define "kultivar.storeUrl" -}}
{{- $store := .Values.artifactStore -}}
{{- if eq $store.type "s3" -}}
{{- required "artifactStore.s3.url is required when artifactStore.type is s3" $store.s3.url -}}
{{- else -}}
{{- printf "file://%s" $store.pvc.mountPath -}}
{{- end -}}
{{- end -}}

{{/* k=v,k2=v2 from a map, sorted by key (KULTIVAR_POD_LABELS). */}}
{{- define "kultivar.keyValues" -}}
{{- $pairs := list -}}
{{- range $k, $v := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* Cluster-wide unless namespaces are listed. */}}
{{- define "kultivar.clusterWide" -}}
{{- if not .Values.watchNamespaces -}}true{{- end -}}
{{- end -}}
