#!/usr/bin/env bash
# One command for the whole benchmark: bench/run.sh [--quick] [--reps N] [--pypi] ...
# (bench/run.sh --help lists every flag). It prepares what the bench needs, then runs
# bench/bench.py:
#   - wrk and nginx from Debian packages (apt-get, as root) when missing;
#   - a throwaway venv in bench/.cache/venv with pip, uv, proxpi 1.3.1 and gunicorn
#     (bench/requirements.txt), reinstalled when that file changes;
#   - on first use, the bench sets' pages and wheels from PyPI into bench/.cache/pypi,
#     and the local upstream and static copy built from them (bench/upstream.py).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
venv="$cache/venv"
python="${BENCH_PYTHON:-python3}"
mkdir -p "$cache"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "run.sh: needs ${missing[*]} (apt-get install ${missing[*]}, as root)" >&2
        exit 1
    fi
    echo "run.sh: installing ${missing[*]} from Debian packages" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$pyver" != "3.11" ]; then
    echo "run.sh: warning: $python is $pyver; the bench sets pin wheels for CPython 3.11" >&2
fi

# pip here must not see the machine's pip configuration or PIP_* variables.
for var in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$var"; done
export PIP_CONFIG_FILE=/dev/null

stamp="$venv/.requirements"
if ! [ -x "$venv/bin/uv" ] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    echo "run.sh: preparing $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --isolated --no-cache-dir --disable-pip-version-check \
        -q --index-url https://pypi.org/simple/ -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$stamp"
fi

exec "$python" "$here/bench.py" "$@"
