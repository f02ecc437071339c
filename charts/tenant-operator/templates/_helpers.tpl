{{/* The chart's name, or nameOverride. */}}
{{- define "tenant-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: fullnameOverride, else the release name, unless it lacks the chart's name.
Every object the chart names is named after it; the suffixes it adds (-tenant-namespace) keep within 253. */}}
{{- define "tenant-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "tenant-operator.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tenant-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The grants Deployment's pods: apart from the operator's, which its Service and PDB select. */}}
{{- define "tenant-operator.grantsSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-operator.name" . }}-grants
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

{{/* The `helm test` pod (templates/tests/): let through to the metrics port by the NetworkPolicy. */}}
{{- define "tenant-operator.testSelectorLabels" -}}
app.kubernetes.io/name: {{ include "tenant-operator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
