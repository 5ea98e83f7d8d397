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
{{- $s := .Values.redis.sentinel }}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s:6379/0" (include "ucwa-bridge.redisName" .) }}
{{- else if $s.enabled }}
{{- printf "redis+sentinel://%s/%s/%d" (join "," $s.hosts) $s.masterName (int $s.db) }}
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

{{/*
The RQ job timeout of a send job, in seconds: bridge.outbound.intake.SEND_JOB_TIMEOUT_S (first
attempts and retries alike). tests/deploy/test_helm.py compares it with the code.
*/}}
{{- define "ucwa-bridge.sendJobTimeoutSeconds" -}}120{{- end }}

{{/* The RQ job timeout of a webhook delivery: 3 x BRIDGE_WEBHOOK_TIMEOUT_S + 30 (webhooks/settings.py). */}}
{{- define "ucwa-bridge.webhookJobTimeoutSeconds" -}}
{{- $timeout := index .Values.config.extra "BRIDGE_WEBHOOK_TIMEOUT_S" | default 15 | float64 }}
{{- mulf $timeout 3 | addf 30 | floor | int }}
{{- end }}

{{/* "true" when a role's replica count belongs to an autoscaler (the Deployment leaves it out). */}}
{{- define "ucwa-bridge.autoscaled" -}}
{{- if and (eq .role "api") .root.Values.api.autoscaling.enabled }}true{{ end }}
{{- if and (eq .role "worker") .root.Values.keda.enabled }}true{{ end }}
{{- end }}

{{/*
Where KEDA's scaler finds Redis, as JSON {"type": "redis"|"redis-sentinel", "metadata": {...}}:
keda.redis.address when set, else derived from the redis.* setting the pods use.
*/}}
{{- define "ucwa-bridge.kedaRedis" -}}
{{- $v := .Values }}
{{- $k := $v.keda.redis }}
{{- $type := "redis" }}
{{- $m := dict }}
{{- if $k.address }}
{{- if $k.sentinelMaster }}
{{- $type = "redis-sentinel" }}
{{- $_ := set $m "addresses" $k.address }}
{{- $_ := set $m "sentinelMaster" $k.sentinelMaster }}
{{- else }}
{{- $_ := set $m "address" $k.address }}
{{- end }}
{{- $_ := set $m "databaseIndex" (int $k.databaseIndex | toString) }}
{{- if $k.enableTLS }}{{ $_ := set $m "enableTLS" "true" }}{{ end }}
{{- else if $v.redis.urlFromExistingSecret }}
{{- fail "keda.redis.address is required with redis.urlFromExistingSecret: the chart cannot read the Redis URL inside the Secret" }}
{{- else if $v.redis.bundled.enabled }}
{{- $_ := set $m "address" (printf "%s:6379" (include "ucwa-bridge.redisName" .)) }}
{{- $_ := set $m "databaseIndex" "0" }}
{{- else if $v.redis.sentinel.enabled }}
{{- $type = "redis-sentinel" }}
{{- $_ := set $m "addresses" (join "," $v.redis.sentinel.hosts) }}
{{- $_ := set $m "sentinelMaster" $v.redis.sentinel.masterName }}
{{- $_ := set $m "databaseIndex" (int $v.redis.sentinel.db | toString) }}
{{- else }}
{{- $credentials := "keda: redis.url carries credentials; put the URL into secrets.existingSecret (redis.urlFromExistingSecret), the password alone under keda.redis.passwordKey and set keda.redis.address" }}
{{- if hasPrefix "redis+sentinel://" $v.redis.url }}
{{- /* By hand: a host list is no URL host for urlParse. */}}
{{- $rest := trimPrefix "redis+sentinel://" $v.redis.url | splitn "/" 2 }}
{{- if contains "@" $rest._0 }}{{ fail $credentials }}{{ end }}
{{- $path := splitList "/" (trimSuffix "/" (default "" $rest._1)) }}
{{- $type = "redis-sentinel" }}
{{- $hosts := list }}
{{- range splitList "," $rest._0 }}
{{- $hosts = append $hosts (ternary (trim .) (printf "%s:26379" (trim .)) (regexMatch ":[0-9]+$" .)) }}
{{- end }}
{{- $_ := set $m "addresses" (join "," $hosts) }}
{{- $_ := set $m "sentinelMaster" (index $path 0) }}
{{- $_ := set $m "databaseIndex" (ternary (index $path (sub (len $path) 1)) "0" (gt (len $path) 1)) }}
{{- else }}
{{- $u := urlParse $v.redis.url }}
{{- if $u.userinfo }}{{ fail $credentials }}{{ end }}
{{- $path := splitList "/" (trimPrefix "/" $u.path) }}
{{- if has $u.scheme (list "redis" "rediss") }}
{{- $_ := set $m "address" (ternary $u.host (printf "%s:6379" $u.host) (regexMatch ":[0-9]+$" $u.host)) }}
{{- $_ := set $m "databaseIndex" (default "0" (index $path 0)) }}
{{- if eq $u.scheme "rediss" }}{{ $_ := set $m "enableTLS" "true" }}{{ end }}
{{- else }}
{{- fail (printf "keda: cannot reach Redis at a %s:// URL; set keda.redis.address" $u.scheme) }}
{{- end }}
{{- end }}
{{- end }}
{{- dict "type" $type "metadata" $m | toJson }}
{{- end }}

{{/* "true" when config.extra turns the API's key check off (BRIDGE_AUTH_DISABLED). */}}
{{- define "ucwa-bridge.authDisabled" -}}
{{- $value := index .Values.config.extra "BRIDGE_AUTH_DISABLED" | default "" | toString | lower }}
{{- if has $value (list "1" "true" "yes" "on") }}true{{ end }}
{{- end }}

{{/*
Values without which no pod could start, one line each with what to set; empty when all are set.
Secrets inside secrets.existingSecret cannot be checked here (the chart cannot read them).
*/}}
{{- define "ucwa-bridge.missingValues" -}}
{{- $v := .Values }}
{{- $missing := list }}
{{- if not $v.image.repository }}
{{- $missing = append $missing "image.repository: no registry publishes the image; build and push it (docker build -t registry.example.com/ucwa-bridge:0.1.0 . && docker push registry.example.com/ucwa-bridge:0.1.0), then --set image.repository=registry.example.com/ucwa-bridge --set image.tag=0.1.0" }}
{{- end }}
{{- if include "ucwa-bridge.accounts" . }}
{{- with (include "ucwa-bridge.missingAccountValues" .) }}
{{- $missing = concat $missing (splitList "\n" .) }}
{{- end }}
{{- else }}
{{- if not $v.config.ucwa.discoveryUrl }}
{{- $missing = append $missing "config.ucwa.discoveryUrl: the UCWA autodiscover URL, e.g. https://lyncdiscover.contoso.com/Autodiscover/AutodiscoverService.svc/root" }}
{{- end }}
{{- if not $v.config.ucwa.username }}
{{- $missing = append $missing "config.ucwa.username: the account the bridge signs in as, e.g. bot@contoso.com" }}
{{- end }}
{{- if and (not $v.secrets.existingSecret) (not $v.secrets.ucwaPassword) }}
{{- $missing = append $missing "secrets.ucwaPassword, or secrets.existingSecret: the name of a Secret you created with the keys the README lists" }}
{{- end }}
{{- end }}
{{- if not $v.secrets.existingSecret }}
{{- if and (not $v.secrets.apiKeys) (not (include "ucwa-bridge.authDisabled" .)) }}
{{- $missing = append $missing "secrets.apiKeys (16+ characters each), or secrets.existingSecret" }}
{{- end }}
{{- if and $v.webhooks.url (not $v.secrets.webhookSecret) }}
{{- $missing = append $missing "secrets.webhookSecret (whsec_...) for webhooks.url, or secrets.existingSecret" }}
{{- end }}
{{- end }}
{{- $r := $v.redis }}
{{- if not (or $r.bundled.enabled $r.url $r.urlFromExistingSecret $r.sentinel.enabled) }}
{{- $missing = append $missing "redis.url (or redis.urlFromExistingSecret or redis.sentinel), or enable redis.bundled" }}
{{- end }}
{{- join "\n" $missing }}
{{- end }}

{{/*
"true" when an Ingress path of this pathType would route ``/metrics``: Prefix matches whole path
elements ("/" and "/metrics" do), Exact the path itself; ImplementationSpecific is taken as a
plain string prefix (ingress-nginx's reading; "/m" would do). Call with (dict "path" "pathType").
*/}}
{{- define "ucwa-bridge.routesMetrics" -}}
{{- $path := .path }}
{{- $type := .pathType | default "Prefix" }}
{{- if eq $type "Exact" }}
{{- if has $path (list "/metrics" "/metrics/") }}true{{ end }}
{{- else if eq $type "Prefix" }}
{{- if has (trimSuffix "/" $path) (list "" "/metrics") }}true{{ end }}
{{- else if hasPrefix $path "/metrics" }}true
{{- end }}
{{- end }}

{{/* Start-up checks of combinations the schema cannot express. */}}
{{- define "ucwa-bridge.validate" -}}
{{- if and .Values.webhooks.url (include "ucwa-bridge.webhooksFile" .) }}
{{- fail "webhooks: set either webhooks.url or webhooks.endpoints (endpointsFromExistingSecret), not both" }}
{{- end }}
{{- include "ucwa-bridge.validateAccounts" . }}
{{- with (include "ucwa-bridge.missingValues" .) }}
{{- fail (printf "missing required values (see the README, \"With Helm\"):\n  - %s" (replace "\n" "\n  - " .)) }}
{{- end }}
{{- if and .Values.webhooks.endpointsFromExistingSecret (not .Values.secrets.existingSecret) }}
{{- fail "webhooks.endpointsFromExistingSecret needs secrets.existingSecret" }}
{{- end }}
{{- if and .Values.redis.urlFromExistingSecret (not .Values.secrets.existingSecret) }}
{{- fail "redis.urlFromExistingSecret needs secrets.existingSecret" }}
{{- end }}
{{- $sentinel := .Values.redis.sentinel }}
{{- if and (not .Values.redis.bundled.enabled) (not .Values.redis.url) (not .Values.redis.urlFromExistingSecret) (not $sentinel.enabled) }}
{{- fail "redis: set redis.url (or redis.urlFromExistingSecret or redis.sentinel) or enable redis.bundled" }}
{{- end }}
{{- if $sentinel.enabled }}
{{- if .Values.redis.bundled.enabled }}
{{- fail "redis.sentinel.enabled and redis.bundled.enabled exclude each other: set redis.bundled.enabled=false" }}
{{- end }}
{{- if or .Values.redis.url .Values.redis.urlFromExistingSecret }}
{{- fail "redis.sentinel.enabled excludes redis.url and redis.urlFromExistingSecret (a Sentinel URL with a password goes into the Secret, with redis.sentinel.enabled=false)" }}
{{- end }}
{{- if not $sentinel.hosts }}
{{- fail "redis.sentinel.enabled needs redis.sentinel.hosts (host:port of each sentinel)" }}
{{- end }}
{{- if not $sentinel.masterName }}
{{- fail "redis.sentinel.enabled needs redis.sentinel.masterName" }}
{{- end }}
{{- end }}
{{- $as := .Values.api.autoscaling }}
{{- if $as.enabled }}
{{- if gt (int $as.minReplicas) (int $as.maxReplicas) }}
{{- fail "api.autoscaling: minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- if not (dig "requests" "cpu" "" .Values.api.resources) }}
{{- fail "api.autoscaling needs api.resources.requests.cpu (the HPA's CPU target is relative to it)" }}
{{- end }}
{{- end }}
{{- if .Values.keda.enabled }}
{{- if gt (int .Values.keda.minReplicas) (int .Values.keda.maxReplicas) }}
{{- fail "keda: minReplicas must not exceed maxReplicas" }}
{{- end }}
{{- if and .Values.keda.redis.passwordKey (not .Values.secrets.existingSecret) }}
{{- fail "keda.redis.passwordKey needs secrets.existingSecret" }}
{{- end }}
{{- $_ := include "ucwa-bridge.kedaRedis" . }}
{{- end }}
{{- if hasKey .Values.config.extra "BRIDGE_API_GRACEFUL_TIMEOUT_S" }}
{{- fail "config.extra.BRIDGE_API_GRACEFUL_TIMEOUT_S: set api.gracefulTimeoutSeconds instead (the chart checks it against api.terminationGracePeriodSeconds)" }}
{{- end }}
{{- $api := .Values.api }}
{{- $apiShutdown := add (int $api.preStopSleepSeconds) (int $api.gracefulTimeoutSeconds) }}
{{- if le (int $api.terminationGracePeriodSeconds) $apiShutdown }}
{{- fail (printf "api.terminationGracePeriodSeconds (%d) must be longer than api.preStopSleepSeconds + api.gracefulTimeoutSeconds (%d s), or requests in progress are cut off at shutdown" (int $api.terminationGracePeriodSeconds) $apiShutdown) }}
{{- end }}
{{- if .Values.ingress.enabled }}
{{- range $host := .Values.ingress.hosts }}
{{- range ($host.paths | default $.Values.ingress.paths) }}
{{- if include "ucwa-bridge.routesMetrics" (dict "path" .path "pathType" .pathType) }}
{{- fail (printf "ingress: path %q (%s) of host %q would route the API's /metrics out of the cluster; list the API's public routes instead (ingress.paths)" .path (.pathType | default "Prefix") $host.host) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $longest := max (int (include "ucwa-bridge.sendJobTimeoutSeconds" .)) (int (include "ucwa-bridge.webhookJobTimeoutSeconds" .)) }}
{{- if le (int .Values.worker.terminationGracePeriodSeconds) $longest }}
{{- fail (printf "worker.terminationGracePeriodSeconds (%d) must be longer than the longest job timeout (%d s), or a worker is killed in the middle of a job" (int .Values.worker.terminationGracePeriodSeconds) $longest) }}
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
{{- if and (or $ext $v.secrets.apiKeys) (not (include "ucwa-bridge.authDisabled" $root)) }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_API_KEYS" "key" $keys.apiKeys) }}
{{- end }}
- name: BRIDGE_API_WORKERS
  value: {{ $v.api.workers | quote }}
- name: BRIDGE_API_GRACEFUL_TIMEOUT_S
  value: {{ $v.api.gracefulTimeoutSeconds | quote }}
- name: PROMETHEUS_MULTIPROC_DIR
  value: {{ $v.metricsVolume.mountPath | quote }}
{{- else }}
{{- if and (not (include "ucwa-bridge.accounts" $root)) (or $ext $v.secrets.ucwaPassword) }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_UCWA_PASSWORD" "key" $keys.ucwaPassword) }}
{{- end }}
{{- if $v.metrics.enabled }}
- name: BRIDGE_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
{{- end }}
{{- if eq .role "worker" }}
- name: BRIDGE_WORKER_RUNNERS
  value: {{ $v.worker.runners | quote }}
{{- end }}
{{- end }}
{{- if and $v.webhooks.url (or $ext $v.secrets.webhookSecret) }}
{{ include "ucwa-bridge.secretEnv" (dict "root" $root "name" "BRIDGE_WEBHOOK_SECRET" "key" $keys.webhookSecret) }}
{{- end }}
{{- if include "ucwa-bridge.webhooksFile" $root }}
- name: BRIDGE_WEBHOOKS_FILE
  value: {{ printf "%s/%s" (include "ucwa-bridge.webhooksMountPath" $root) $keys.webhooks | quote }}
{{- end }}
{{- if include "ucwa-bridge.accounts" $root }}
- name: BRIDGE_ACCOUNTS_FILE
  value: {{ include "ucwa-bridge.accountsFilePath" $root | quote }}
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
  {{- if not (include "ucwa-bridge.autoscaled" $ctx) }}
  replicas: {{ $r.replicas }}
  {{- end }}
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
          {{- with $v.api.preStopSleepSeconds }}
          # Keep serving while the endpoint removal reaches kube-proxy and the ingress controller.
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ . | quote }}]
          {{- end }}
          {{- else }}
          args: [{{ $role | quote }}]
          {{- if $v.metrics.enabled }}
          ports:
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- end }}
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
            {{- if include "ucwa-bridge.accounts" $root }}
            - name: accounts
              mountPath: {{ include "ucwa-bridge.accountsFileMountPath" $root }}
              readOnly: true
            {{- if ne $role "api" }}
            - name: account-passwords
              mountPath: {{ include "ucwa-bridge.accountPasswordsMountPath" $root }}
              readOnly: true
            {{- end }}
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
        {{- if include "ucwa-bridge.accounts" $root }}
        - name: accounts
          configMap:
            name: {{ include "ucwa-bridge.accountsConfigMapName" $root }}
        {{- if ne $role "api" }}
        # Only the roles that sign in get the passwords.
        - name: account-passwords
          secret:
            secretName: {{ include "ucwa-bridge.secretName" $root }}
            items:
              {{- range $v.config.ucwa.accounts }}
              - key: {{ include "ucwa-bridge.accountPasswordKey" (dict "root" $root "id" .id) }}
                path: {{ .id }}
              {{- end }}
        {{- end }}
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
      {{- $spread := list }}
      {{- if $r.spreadAcrossNodes }}
      {{- $spread = append $spread (dict "maxSkew" 1 "topologyKey" "kubernetes.io/hostname" "whenUnsatisfiable" "ScheduleAnyway") }}
      {{- end }}
      {{- $spread = concat $spread ($r.topologySpreadConstraints | default list) }}
      {{- with $spread }}
      topologySpreadConstraints:
        {{- range . }}
        {{- $constraint := deepCopy . }}
        {{- if not (hasKey $constraint "labelSelector") }}
        {{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "ucwa-bridge.roleSelectorLabels" $ctx | fromYaml)) }}
        {{- end }}
        - {{ toYaml $constraint | indent 10 | trim }}
        {{- end }}
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
