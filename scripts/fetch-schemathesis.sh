#!/usr/bin/env bash
# Installs Schemathesis (PyPI) into a cached virtualenv for the API schema
# test, once; prints the path of its `schemathesis` command.
set -euo pipefail
version=4.32.5
dir="${SPARKCAP_CACHE:-$HOME/.cache/sparkcap}/schemathesis-$version"
if [ ! -x "$dir/bin/schemathesis" ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        echo "==> python3 venv not found: installing python3-venv with apt-get" >&2
        ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    echo "==> installing schemathesis $version (cached in $dir)" >&2
    rm -rf "$dir"
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version" >&2
fi
echo "$dir/bin/schemathesis"
