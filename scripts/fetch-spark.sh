#!/usr/bin/env bash
# Fetches Spark 3.5.3 (the distribution inside PyPI's pyspark) into a cache
# for the spark-submit tests, once; prints its SPARK_HOME.
set -euo pipefail
dir="${SPARKCAP_CACHE:-$HOME/.cache/sparkcap}"
home="$dir/pyspark-3.5.3/deps"
if [ ! -x "$home/bin/spark-submit" ]; then
    mkdir -p "$dir"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "==> pip not found: installing python3-pip with apt-get" >&2
        ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    echo "==> downloading pyspark 3.5.3 (about 300 MB, cached in $dir)" >&2
    python3 -m pip download --no-deps --quiet pyspark==3.5.3 -d "$dir" >&2
    tar xzf "$dir/pyspark-3.5.3.tar.gz" -C "$dir"
    rm -f "$dir/pyspark-3.5.3.tar.gz"
fi
echo "$home"
