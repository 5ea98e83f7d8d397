{{/*
Several UCWA accounts (config.ucwa.accounts): the accounts file every role reads
(BRIDGE_ACCOUNTS_FILE, from a ConfigMap, without passwords) and the password files mounted
into the worker and poller pods only, one Secret key per account.
*/}}

{{/* "true" when config.ucwa.accounts lists accounts (instead of config.ucwa.username). */}}
{{- define "ucwa-bridge.accounts" -}}
{{- if .Values.config.ucwa.accounts }}true{{ end }}
{{- end }}

{{- define "ucwa-bridge.accountsConfigMapName" -}}
{{- printf "%s-accounts" (include "ucwa-bridge.fullname" .) }}
{{- end }}

{{/* Where the accounts file and the password files are mounted (separate volumes). */}}
{{- define "ucwa-bridge.accountsFileMountPath" -}}/etc/ucwa-bridge/config{{- end }}
{{- define "ucwa-bridge.accountPasswordsMountPath" -}}/etc/ucwa-bridge/accounts{{- end }}

{{- define "ucwa-bridge.accountsFilePath" -}}
{{- printf "%s/accounts.yaml" (include "ucwa-bridge.accountsFileMountPath" .) }}
{{- end }}

{{/* The Secret key of one account's password; call with (dict "root" $ "id" "alerts"). */}}
{{- define "ucwa-bridge.accountPasswordKey" -}}
{{- printf "%s%s" .root.Values.secrets.keys.accountPasswordPrefix .id }}
{{- end }}

{{/*
The accounts file: each entry as the bridge reads it, its password_file the path the worker and
poller pods mount the password at (the api never reads it).
*/}}
{{- define "ucwa-bridge.accountsFile" -}}
{{- $entries := list }}
{{- range .Values.config.ucwa.accounts }}
{{- $entry := dict "id" .id "username" .username "default" (.default | default false) }}
{{- $_ := set $entry "password_file" (printf "%s/%s" (include "ucwa-bridge.accountPasswordsMountPath" $) .id) }}
{{- with .discoveryUrl }}{{ $_ := set $entry "discovery_url" . }}{{ end }}
{{- $entries = append $entries $entry }}
{{- end }}
{{- toYaml (dict "accounts" $entries) }}
{{- end }}

{{/*
Missing account values, one line each (for ucwa-bridge.missingValues); the accounts without a
discovery URL of their own need config.ucwa.discoveryUrl, and without secrets.existingSecret
every account needs its password.
*/}}
{{- define "ucwa-bridge.missingAccountValues" -}}
{{- $v := .Values }}
{{- $missing := list }}
{{- if not $v.config.ucwa.discoveryUrl }}
{{- $without := list }}
{{- range $v.config.ucwa.accounts }}{{ if not .discoveryUrl }}{{ $without = append $without .id }}{{ end }}{{ end }}
{{- with $without }}
{{- $missing = append $missing (printf "config.ucwa.discoveryUrl: the UCWA autodiscover URL of the accounts without a discoveryUrl (%s), e.g. https://lyncdiscover.contoso.com/Autodiscover/AutodiscoverService.svc/root" (join ", " .)) }}
{{- end }}
{{- end }}
{{- if not $v.secrets.existingSecret }}
{{- $passwords := $v.secrets.accountPasswords | default dict }}
{{- range $v.config.ucwa.accounts }}
{{- if not (index $passwords .id) }}
{{- $missing = append $missing (printf "secrets.accountPasswords.%s: the password of %s, or secrets.existingSecret with the key %s" .id .username (include "ucwa-bridge.accountPasswordKey" (dict "root" $ "id" .id))) }}
{{- end }}
{{- end }}
{{- end }}
{{- join "\n" $missing }}
{{- end }}

{{/* Checks of the account values the schema cannot express; fails naming the problem. */}}
{{- define "ucwa-bridge.validateAccounts" -}}
{{- $v := .Values }}
{{- $accounts := $v.config.ucwa.accounts }}
{{- range (list "BRIDGE_ACCOUNTS" "BRIDGE_ACCOUNTS_FILE") }}
{{- if hasKey $v.config.extra . }}
{{- fail (printf "config.extra.%s: list the accounts under config.ucwa.accounts instead (their passwords never go into the ConfigMap)" .) }}
{{- end }}
{{- end }}
{{- if $accounts }}
{{- if $v.config.ucwa.username }}
{{- fail "config.ucwa.username and config.ucwa.accounts exclude each other: list that account in config.ucwa.accounts (with the id \"default\" to keep its queued messages and conversations)" }}
{{- end }}
{{- $ids := list }}
{{- $usernames := list }}
{{- $defaults := list }}
{{- $otherKeys := values (omit $v.secrets.keys "accountPasswordPrefix") }}
{{- range $accounts }}
{{- if has .id $ids }}
{{- fail (printf "config.ucwa.accounts: two accounts share the id %q" .id) }}
{{- end }}
{{- if has (lower .username) $usernames }}
{{- fail (printf "config.ucwa.accounts: two accounts share the username %q" .username) }}
{{- end }}
{{- $key := include "ucwa-bridge.accountPasswordKey" (dict "root" $ "id" .id) }}
{{- if has $key $otherKeys }}
{{- fail (printf "config.ucwa.accounts: the password key %q of account %q is another secret's key; change secrets.keys.accountPasswordPrefix" $key .id) }}
{{- end }}
{{- $ids = append $ids .id }}
{{- $usernames = append $usernames (lower .username) }}
{{- if .default }}{{ $defaults = append $defaults .id }}{{ end }}
{{- end }}
{{- if gt (len $defaults) 1 }}
{{- fail (printf "config.ucwa.accounts: only one account may be default: true (%s are)" (join ", " $defaults)) }}
{{- end }}
{{- if and (gt (len $accounts) 1) (not $defaults) }}
{{- fail "config.ucwa.accounts: mark one account default: true (it sends the messages that name no account)" }}
{{- end }}
{{- if not $v.secrets.existingSecret }}
{{- if $v.secrets.ucwaPassword }}
{{- fail "secrets.ucwaPassword is the password of config.ucwa.username; with config.ucwa.accounts give each account's under secrets.accountPasswords" }}
{{- end }}
{{- range $id, $_ := $v.secrets.accountPasswords }}
{{- if not (has $id $ids) }}
{{- fail (printf "secrets.accountPasswords.%s: no account with that id in config.ucwa.accounts" $id) }}
{{- end }}
{{- end }}
{{- end }}
{{- else if $v.secrets.accountPasswords }}
{{- fail "secrets.accountPasswords needs config.ucwa.accounts (the single account's password is secrets.ucwaPassword)" }}
{{- end }}
{{- end }}
