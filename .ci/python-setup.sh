#!/usr/bin/env bash
# Python hooks (`sagebrush package --python`): installs the pinned componentize-py from PyPI
# into the venv where sagebrush looks for it, `${SAGEBRUSH_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/sagebrush}/componentize-py-<version>`
# (runtime/src/package/python.rs; the command does the same on first use). Does nothing when it
# is there. The version must match COMPONENTIZE_PY_VERSION there.
set -euo pipefail
version=0.25.1
cache="${SAGEBRUSH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sagebrush}"
venv="$cache/componentize-py-$version"
if [ -f "$venv/.sagebrush-installed" ] && [ -x "$venv/bin/componentize-py" ]; then
    exit 0
fi
echo "python-setup: installing componentize-py $version into $venv"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
"$venv/bin/componentize-py" --version
printf '%s' "$version" > "$venv/.sagebrush-installed"
