{{/* Chart name, truncated to the 63 characters Kubernetes allows in names. */}}
{{- define "ucwa-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; the role suffix ("-api", "-redis", ...) must still fit in 63. */}}
{{- define "ucwa-bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ucwa-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ucwa-bridge.labels" -}}
helm.sh/chart: {{ include "ucwa-bridge.chart" . }}
{{ include "ucwa-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ucwa-bridge
{{- end }}

{{- define "ucwa-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ucwa-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one role; call with (dict "root" $ "role" "api"). */}}
{{- define "ucwa-bridge.roleLabels" -}}
{{ include "ucwa-bridge.labels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "ucwa-bridge.roleSelectorLabels" -}}
{{ include "ucwa-bridge.selectorLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "ucwa-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ucwa-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ucwa-bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret the pods read: an existing one, or the one this chart renders. */}}
{{- define "ucwa-bridge.secretName" -}}
{{- default (include "ucwa-bridge.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "ucwa-bridge.redisName" -}}
{{- printf "%s-redis" (include "ucwa-bridge.fullname" .) }}
{{- end }}

{{/* BRIDGE_REDIS_URL when it is not read from a Secret. */}}
{{- define "ucwa-bridge.redisUrl" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s:6379/0" (include "ucwa-bridge.redisName" .) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{- define "ucwa-bridge.redisUrlFromSecret" -}}
{{- if and (not .Values.redis.bundled.enabled) .Values.redis.urlFromExistingSecret }}true{{ end }}
{{- end }}

{{/* "true" when the endpoint list is mounted as a file (BRIDGE_WEBHOOKS_FILE). */}}
{{- define "ucwa-bridge.webhooksFile" -}}
{{- if .Values.secrets.existingSecret }}
{{- if .Values.webhooks.endpointsFromExistingSecret }}true{{ end }}
{{- else if .Values.webhooks.endpoints }}true{{ end }}
{{- end }}

{{- define "ucwa-bridge.webhooksMountPath" -}}/etc/ucwa-bridge/webhooks{{- end }}

{{/* Start-up checks of combinations the schema cannot express. */}}
{{- define "ucwa-bridge.validate" -}}
{{- if and .Values.webhooks.url (include "ucwa-bridge.webhooksFile" .) }}
{{- fail "webhooks: set either webhooks.url or webhooks.endpoints (endpointsFromExistingSecret), not both" }}
{{- end }}
{{- if and .Values.webhooks.endpointsFromExistingSecret (not .Values.secrets.existingSecret) }}
{{- fail "webhooks.endpointsFromExistingSecret needs secrets.existingSecret" }}
{{- end }}
{{- if and .Values.redis.urlFromExistingSecret (not .Values.secrets.existingSecret) }}
{{- fail "redis.urlFromExistingSecret needs secrets.existingSecret" }}
{{- end }}
{{- if and (not .Values.redis.bundled.enabled) (not .Values.redis.url) (not .Values.redis.urlFromExistingSecret) }}
{{- fail "redis: set redis.url (or redis.urlFromExistingSecret) or enable redis.bundled" }}
{{- end }}
{{- end }}

{{/* One secret environment variable; call with (dict "root" $ "name" "BRIDGE_X" "key" "k"). */}}
{{- define "ucwa-bridge.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "ucwa-bridge.secretName" .root }}
      key: {{ .key }}
{{- end }}

{{/*
Environment of one role; call with (dict "root" $ "role" "api").
Non-secret settings come from the ConfigMap (envFrom); only the secrets a role needs are added.
*/}}
{{- define "ucwa-bridge.env" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $keys := $v.secrets.keys }}
{{- $ext := $v.secrets.existingSecret }}
{{- if include "ucwa-bridge.redisUrlFromSecret" $root }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_REDIS_URL" "key" $keys.redisUrl) }}
{{- end }}
{{- if eq .role "api" }}
{{- if or $ext $v.secrets.apiKeys }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_API_KEYS" "key" $keys.apiKeys) }}
{{- end }}
- name: BRIDGE_API_WORKERS
  value: {{ $v.api.workers | quote }}
- name: PROMETHEUS_MULTIPROC_DIR
  value: {{ $v.metricsVolume.mountPath | quote }}
{{- else }}
{{- if or $ext $v.secrets.ucwaPassword }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_UCWA_PASSWORD" "key" $keys.ucwaPassword) }}
{{- end }}
{{- end }}
{{- if and $v.webhooks.url (or $ext $v.secrets.webhookSecret) }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_WEBHOOK_SECRET" "key" $keys.webhookSecret) }}
{{- end }}
{{- if include "ucwa-bridge.webhooksFile" $root }}
- name: BRIDGE_WEBHOOKS_FILE
  value: {{ printf "%s/%s" (include "ucwa-bridge.webhooksMountPath" $root) $keys.webhooks | quote }}
{{- end }}
{{- with (index $v .role).extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* A Deployment for one bridge role; call with (dict "root" $ "role" "worker"). */}}
{{- define "ucwa-bridge.deployment" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $role := .role }}
{{- $r := index $v $role }}
{{- $ctx := dict "root" $root "role" $role }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ucwa-bridge.fullname" $root }}-{{ $role }}
  labels:
    {{- include "ucwa-bridge.roleLabels" $ctx | nindent 4 }}
spec:
  replicas: {{ $r.replicas }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "ucwa-bridge.roleSelectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ucwa-bridge.roleSelectorLabels" $ctx | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        checksum/secret: {{ include (print $root.Template.BasePath "/secret.yaml") $root | sha256sum }}
        {{- with $r.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "ucwa-bridge.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $r.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ $role }}
          image: {{ include "ucwa-bridge.image" $root | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          {{- if eq $role "api" }}
          args: ["api", "--bind", "0.0.0.0:{{ $v.api.port }}"]
          ports:
            - name: http
              containerPort: {{ $v.api.port }}
              protocol: TCP
          {{- else }}
          args: [{{ $role | quote }}]
          {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "ucwa-bridge.fullname" $root }}
          {{- with (include "ucwa-bridge.env" $ctx | trim) }}
          env:
            {{- . | nindent 12 }}
          {{- end }}
          {{- with $r.startupProbe }}
          startupProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $r.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $r.readinessProbe }}
          readinessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $r.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if eq $role "api" }}
            - name: metrics
              mountPath: {{ $v.metricsVolume.mountPath }}
            {{- end }}
            {{- if include "ucwa-bridge.webhooksFile" $root }}
            - name: webhooks
              mountPath: {{ include "ucwa-bridge.webhooksMountPath" $root }}
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $v.tmpVolume.sizeLimit }}
        {{- if eq $role "api" }}
        - name: metrics
          emptyDir:
            medium: Memory
            sizeLimit: {{ $v.metricsVolume.sizeLimit }}
        {{- end }}
        {{- if include "ucwa-bridge.webhooksFile" $root }}
        - name: webhooks
          secret:
            secretName: {{ include "ucwa-bridge.secretName" $root }}
            items:
              - key: {{ $v.secrets.keys.webhooks }}
                path: {{ $v.secrets.keys.webhooks }}
        {{- end }}
      {{- with $r.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $r.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $r.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $r.spreadAcrossNodes }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "ucwa-bridge.roleSelectorLabels" $ctx | nindent 14 }}
      {{- end }}
{{- end }}

{{/* A PodDisruptionBudget for one role; call with (dict "root" $ "role" "poller"). */}}
{{- define "ucwa-bridge.pdb" -}}
{{- $r := index .root.Values .role }}
{{- if $r.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ucwa-bridge.fullname" .root }}-{{ .role }}
  labels:
    {{- include "ucwa-bridge.roleLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $r.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ucwa-bridge.roleSelectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}
