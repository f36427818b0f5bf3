#!/usr/bin/env bash
# Installs moto's S3-compatible server (`moto_server`), which the S3 tests of
# runtime/src/artifact/fetch.rs start on a free port. Does nothing when it is already there.
set -euo pipefail
if command -v moto_server >/dev/null 2>&1 || python3 -c 'import moto.server' >/dev/null 2>&1; then
    exit 0
fi
python3 -m pip install --quiet 'moto[server]>=5,<6'
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
python3 -c 'import moto.server'
