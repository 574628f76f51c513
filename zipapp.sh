#!/bin/sh
# Build proxpi.pyz: the package alone (no tests, no __pycache__), compressed, runnable
# as `python proxpi.pyz` or `./proxpi.pyz`. Usage: ./zipapp.sh [output path]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/proxpi.pyz"}
python=${PYTHON:-python3}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
# Every module of the package and its layers, in their folders.
(cd "$here" && find proxpi_min -name "*.py" -not -path "*/__pycache__/*" | while read -r f; do
  mkdir -p "$stage/$(dirname "$f")" && cp "$f" "$stage/$f"
done)
# The package's own __main__ (it exits with main()'s status) is the archive's entry point.
cp "$here/proxpi_min/__main__.py" "$stage/__main__.py"
"$python" -m zipapp "$stage" --compress --python "/usr/bin/env python3" --output "$out"
echo "built $out"
