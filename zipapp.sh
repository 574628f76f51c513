#!/bin/sh
# Build proxpi.pyz: the package alone (no tests, no __pycache__), compressed, runnable
# as `python proxpi.pyz` or `./proxpi.pyz`. Usage: ./zipapp.sh [output path]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/proxpi.pyz"}
python=${PYTHON:-python3}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/proxpi_min"
cp "$here"/proxpi_min/*.py "$stage/proxpi_min/"
# The package's own __main__ (it exits with main()'s status) is the archive's entry point.
cp "$here/proxpi_min/__main__.py" "$stage/__main__.py"
"$python" -m zipapp "$stage" --compress --python "/usr/bin/env python3" --output "$out"
echo "built $out"
