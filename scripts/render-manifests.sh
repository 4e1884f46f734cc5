#!/usr/bin/env bash
# Renders the Helm chart with its default values into manifests/sparkcap.yaml
# (for installs without Helm). tests/tests/helm_chart.rs fails when the
# committed file differs from this output: run this after changing the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
{
    echo "# sparkcap, rendered from charts/sparkcap with its default values by"
    echo "# scripts/render-manifests.sh (namespace sparkcap-system). Do not edit: change"
    echo "# the chart and render again. Needs cert-manager; see the README's install section."
    helm template sparkcap charts/sparkcap --namespace sparkcap-system
} > manifests/sparkcap.yaml
echo "wrote manifests/sparkcap.yaml"
