#!/usr/bin/env bash
# Fetches Spark (the distribution inside PyPI's pyspark; 3.5.3 unless a
# version is given, e.g. 4.3.0) into a cache for the spark-submit tests,
# once; prints its SPARK_HOME.
set -euo pipefail
version="${1:-3.5.3}"
dir="${SPARKCAP_CACHE:-$HOME/.cache/sparkcap}"
home="$dir/pyspark-$version/deps"
if [ ! -x "$home/bin/spark-submit" ]; then
    mkdir -p "$dir"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "==> pip not found: installing python3-pip with apt-get" >&2
        ${SUDO:-} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    echo "==> downloading pyspark $version (about 300-450 MB, cached in $dir)" >&2
    python3 -m pip download --no-deps --no-binary pyspark --quiet "pyspark==$version" -d "$dir" >&2
    tar xzf "$dir/pyspark-$version.tar.gz" -C "$dir"
    rm -f "$dir/pyspark-$version.tar.gz"
fi
echo "$home"
