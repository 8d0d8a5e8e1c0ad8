{{/* Chart name. */}}
{{- define "connectome-assets.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "connectome-assets.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "connectome-assets.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Standard labels; call with (dict "ctx" $ "component" "webserver"). */}}
{{- define "connectome-assets.labels" -}}
helm.sh/chart: {{ include "connectome-assets.chart" .ctx }}
{{ include "connectome-assets.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: connectome-assets
{{- end -}}

{{- define "connectome-assets.selectorLabels" -}}
app.kubernetes.io/name: {{ include "connectome-assets.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "connectome-assets.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "connectome-assets.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "connectome-assets.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) -}}
{{- end -}}

{{- define "connectome-assets.userCodeService" -}}
{{- printf "%s-user-code" (include "connectome-assets.fullname" .) -}}
{{- end -}}

{{- define "connectome-assets.registryService" -}}
{{- printf "%s-registry" (include "connectome-assets.fullname" .) -}}
{{- end -}}

{{- define "connectome-assets.envConfigMap" -}}
{{- printf "%s-env" (include "connectome-assets.fullname" .) -}}
{{- end -}}

{{- define "connectome-assets.instanceConfigMap" -}}
{{- printf "%s-instance" (include "connectome-assets.fullname" .) -}}
{{- end -}}

{{- define "connectome-assets.workspaceConfigMap" -}}
{{- printf "%s-workspace" (include "connectome-assets.fullname" .) -}}
{{- end -}}

{{/* Where run Jobs and the volume workers' Indexed Jobs are created. */}}
{{- define "connectome-assets.jobNamespace" -}}
{{- default .Release.Namespace .Values.dagster.runLauncher.jobNamespace -}}
{{- end -}}

{{/* The ClickHouse host: the value, else the Altinity installation's Service (clickhouse-<CHI name>). */}}
{{- define "connectome-assets.clickhouseHost" -}}
{{- if .Values.connectome.clickhouse.host -}}
{{- .Values.connectome.clickhouse.host -}}
{{- else if .Values.clickhouse.install -}}
{{- printf "clickhouse-%s-clickhouse" (include "connectome-assets.fullname" .) -}}
{{- else -}}
{{- fail "connectome.clickhouse.host is empty and clickhouse.install is false: name the ClickHouse server" -}}
{{- end -}}
{{- end -}}

{{/*
Secret references shared by every container and by the run pods (K8sRunLauncher):
only secretKeyRef entries, never a value. CONNECTOME_CLICKHOUSE_URL is composed with
$(CONNECTOME_CLICKHOUSE_PASSWORD), which Kubernetes expands from the entry before it.
*/}}
{{- define "connectome-assets.secretEnv" -}}
{{- $s := .Values.secrets -}}
- name: DAGSTER_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.postgresql.existingSecret }}
      key: {{ $s.postgresql.passwordKey }}
{{- if $s.metadata.existingSecret }}
- name: CONNECTOME_METADATA_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.metadata.existingSecret }}
      key: {{ $s.metadata.urlKey }}
{{- end }}
{{- if $s.clickhouse.urlKey }}
- name: CONNECTOME_CLICKHOUSE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $s.clickhouse.existingSecret }}
      key: {{ $s.clickhouse.urlKey }}
{{- else }}
- name: CONNECTOME_CLICKHOUSE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.clickhouse.existingSecret }}
      key: {{ $s.clickhouse.passwordKey }}
{{- $ch := .Values.connectome.clickhouse }}
- name: CONNECTOME_CLICKHOUSE_URL
  value: {{ printf "%s://%s:$(CONNECTOME_CLICKHOUSE_PASSWORD)@%s:%v" $ch.scheme $ch.username (include "connectome-assets.clickhouseHost" .) $ch.port | quote }}
{{- end }}
- name: CONNECTOME_REGISTRY_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $s.registry.existingSecret }}
      key: {{ $s.registry.secretKey }}
- name: CONNECTOME_REGISTRY_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $s.registry.existingSecret }}
      key: {{ $s.registry.tokenKey }}
{{- if $s.gcsKey.existingSecret }}
- name: CONNECTOME_REGISTRY_GCS_KEY
  value: {{ printf "%s/%s" $s.gcsKey.mountPath $s.gcsKey.key | quote }}
- name: GOOGLE_APPLICATION_CREDENTIALS
  value: {{ printf "%s/%s" $s.gcsKey.mountPath $s.gcsKey.key | quote }}
{{- end }}
{{- end -}}

{{/* Volumes for the GCS key (empty list when no key secret is named). */}}
{{- define "connectome-assets.gcsVolumes" -}}
{{- if .Values.secrets.gcsKey.existingSecret }}
- name: gcs-key
  secret:
    secretName: {{ .Values.secrets.gcsKey.existingSecret }}
    items:
      - key: {{ .Values.secrets.gcsKey.key }}
        path: {{ .Values.secrets.gcsKey.key }}
{{- end }}
{{- end -}}

{{- define "connectome-assets.gcsVolumeMounts" -}}
{{- if .Values.secrets.gcsKey.existingSecret }}
- name: gcs-key
  mountPath: {{ .Values.secrets.gcsKey.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The DVID exports claim, read-only at CONNECTOME_EXPORTS (empty when no claim is named). */}}
{{- define "connectome-assets.exportsVolumes" -}}
{{- if .Values.connectome.exportsClaim }}
- name: exports
  persistentVolumeClaim:
    claimName: {{ .Values.connectome.exportsClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "connectome-assets.exportsVolumeMounts" -}}
{{- if .Values.connectome.exportsClaim }}
- name: exports
  mountPath: {{ .Values.connectome.exports }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Common pod-level settings. */}}
{{- define "connectome-assets.podCommon" -}}
serviceAccountName: {{ include "connectome-assets.serviceAccountName" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "connectome-assets.containerSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end -}}
