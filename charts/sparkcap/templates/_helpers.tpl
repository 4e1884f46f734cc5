{{/* Names and labels shared by every object. */}}
{{- define "sparkcap.labels" -}}
app.kubernetes.io/name: sparkcap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "sparkcap.selector" -}}
app.kubernetes.io/name: sparkcap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "sparkcap.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The restricted Pod Security profile, for pods and containers. */}}
{{- define "sparkcap.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "sparkcap.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "sparkcap.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.secretName }}
      key: {{ .Values.database.key }}
{{- end }}

{{/* How the serving certificate is made: certManager, selfManaged or existingSecret. */}}
{{- define "sparkcap.tlsMode" -}}
{{- $m := .Values.webhook.tls.mode -}}
{{- if eq $m "auto" -}}
{{- if .Capabilities.APIVersions.Has "cert-manager.io/v1" }}certManager{{ else }}selfManaged{{ end -}}
{{- else -}}
{{ $m }}
{{- end -}}
{{- end }}


{{/* NetworkPolicy ingress from `peers` (any source when empty) on TCP `ports`. */}}
{{- define "sparkcap.ingressFrom" -}}
{{- if .peers }}
from:
  {{- toYaml .peers | nindent 2 }}
{{- end }}
ports:
  {{- range .ports }}
  - {protocol: TCP, port: {{ . }}}
  {{- end }}
{{- end }}

{{/* NetworkPolicy egress to `cidrs` (any destination when empty) on TCP `ports`. */}}
{{- define "sparkcap.egressTo" -}}
{{- if .cidrs }}
to:
  {{- range .cidrs }}
  - ipBlock: {cidr: {{ . }}}
  {{- end }}
{{- end }}
ports:
  {{- range .ports }}
  - {protocol: TCP, port: {{ . }}}
  {{- end }}
{{- end }}

{{/* A webhook's clientConfig: the Service, and the CA when it is given. */}}
{{- define "sparkcap.clientConfig" -}}
service: {namespace: {{ .ns }}, name: sparkcap-webhook, path: {{ .path }}, port: 443}
{{- if eq (include "sparkcap.tlsMode" .root) "existingSecret" }}
caBundle: {{ .root.Values.webhook.tls.caBundle }}
{{- end }}
{{- end }}

{{/* Tenant namespaces only, never the system ones nor sparkcap's own. */}}
{{- define "sparkcap.namespaceSelector" -}}
matchExpressions:
  - {key: sparkcap.io/tenant, operator: Exists}
  - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-node-lease, {{ . }}]}
{{- end }}
