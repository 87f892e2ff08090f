{{/* Names, labels and shared pieces of the trine chart. */}}

{{- define "trine.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: trine.component (dict "root" $ "name" "ml") */}}
{{- define "trine.component" -}}
{{- printf "%s-%s" (include "trine.fullname" .root) .name -}}
{{- end -}}

{{- define "trine.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trine
{{ include "trine.selectorLabels" . }}
{{- end -}}

{{- define "trine.selectorLabels" -}}
app.kubernetes.io/name: trine
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* image reference: trine.image (dict "root" $ "image" .Values.ml.image) */}}
{{- define "trine.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.registry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "trine.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "trine.fullname" .) -}}
{{- end -}}

{{/* Secret names and keys: the chart's own, or the existing one named in values. */}}
{{- define "trine.internalTokenSecret" -}}
{{- .Values.internalToken.existingSecret | default (printf "%s-internal" (include "trine.fullname" .)) -}}
{{- end -}}
{{- define "trine.keysSecret" -}}
{{- .Values.apiKeys.existingSecret | default (printf "%s-api-keys" (include "trine.fullname" .)) -}}
{{- end -}}
{{- define "trine.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-connections" (include "trine.fullname" .)) -}}
{{- end -}}
{{- define "trine.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-connections" (include "trine.fullname" .)) -}}
{{- end -}}

{{/* Fails the render, naming what is missing, before anything is applied. */}}
{{- define "trine.checkValues" -}}
{{- $v := .Values -}}
{{- if and (not $v.internalToken.existingSecret) (lt (len $v.internalToken.value) 16) -}}
{{- fail "set internalToken.value (at least 16 characters) or internalToken.existingSecret" -}}
{{- end -}}
{{- if not (or $v.apiKeys.keysJson $v.apiKeys.existingSecret) -}}
{{- fail "set apiKeys.keysJson (the gateway's keys file) or apiKeys.existingSecret" -}}
{{- end -}}
{{- if not (or $v.redis.url $v.redis.existingSecret) -}}
{{- fail "set redis.url or redis.existingSecret: the gateways and workers share rate limits and the job queue through Redis" -}}
{{- end -}}
{{- if not (or $v.database.url $v.database.existingSecret) -}}
{{- fail "set database.url or database.existingSecret: the ML replicas share PostgreSQL with pgvector" -}}
{{- end -}}
{{- end -}}

{{- define "trine.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end -}}

{{/* Environment shared by the ML replicas and the worker. */}}
{{- define "trine.mlEnv" -}}
{{ include "trine.secretEnv" (dict "name" "TRINE_INTERNAL_TOKEN" "secret" (include "trine.internalTokenSecret" .) "key" .Values.internalToken.existingSecretKey) }}
{{ include "trine.secretEnv" (dict "name" "DATABASE_URL" "secret" (include "trine.databaseSecret" .) "key" .Values.database.existingSecretKey) }}
- name: HF_HUB_OFFLINE
  value: "1"
- name: TRINE_DATA_DIR
  value: /var/lib/trine
- name: TRINE_LLM_PROVIDER
  value: {{ .Values.llm.provider | quote }}
{{- with .Values.llm.anthropicModel }}
- name: TRINE_ANTHROPIC_MODEL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.llm.openaiBaseUrl }}
- name: TRINE_OPENAI_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.llm.openaiModel }}
- name: TRINE_OPENAI_MODEL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.llm.existingSecret }}
- name: ANTHROPIC_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.llm.anthropicApiKeyKey }}
      optional: true
- name: TRINE_OPENAI_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.llm.openaiApiKeyKey }}
      optional: true
{{- end }}
{{- end -}}

{{- define "trine.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "trine.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "trine.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Pod-level fields every component shares. */}}
{{- define "trine.podCommon" -}}
serviceAccountName: {{ include "trine.serviceAccountName" . }}
automountServiceAccountToken: {{ .Values.serviceAccount.automountToken }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
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
