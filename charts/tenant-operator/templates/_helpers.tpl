{{/* The release's full name: the release name, unless it lacks the chart's name. */}}
{{- define "tenant-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tenant-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The grants Deployment's pods: apart from the operator's, which its Service and PDB select. */}}
{{- define "tenant-operator.grantsSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-grants
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tenant-operator.labels" -}}
{{ include "tenant-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tenant-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tenant-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tenant-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Leader election on a Lease: exactly when more than one replica runs. */}}
{{- define "tenant-operator.leaderElection" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end -}}
{{- end -}}

{{- define "tenant-operator.snapshotClaim" -}}
{{- default (printf "%s-snapshots" (include "tenant-operator.fullname" .)) .Values.snapshots.persistence.existingClaim -}}
{{- end -}}

{{- define "tenant-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}
