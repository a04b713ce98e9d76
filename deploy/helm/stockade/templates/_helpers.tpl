{{- define "stockade.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "stockade.labels" -}}
app.kubernetes.io/part-of: stockade
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "stockade.serverUrl" -}}
{{- if .Values.cluster.server -}}{{ .Values.cluster.server }}{{- else -}}http://stockade-server.{{ .Release.Namespace }}.svc:{{ .Values.server.port }}{{- end -}}
{{- end -}}

{{- define "stockade.tokenSecret" -}}
{{- if .Values.cluster.existingSecret -}}{{ .Values.cluster.existingSecret }}{{- else -}}stockade-cluster{{- end -}}
{{- end -}}

{{- define "stockade.clusterEnv" -}}
- name: STOCKADE_SERVER
  value: {{ include "stockade.serverUrl" . | quote }}
- name: STOCKADE_CLUSTER
  value: {{ required "cluster.name is required" .Values.cluster.name | quote }}
- name: STOCKADE_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "stockade.tokenSecret" . }}, key: token}
{{- end -}}

{{- define "stockade.restricted" -}}
runAsNonRoot: true
runAsUser: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
