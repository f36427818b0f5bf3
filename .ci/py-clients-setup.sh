#!/usr/bin/env bash
# Installs the Python clients the e2e test tests/e2e/python_clients.rs drives the server with
# (issue #12): the `openai` client and `huggingface_hub`, pinned, in a venv at target/py-clients.
# Does nothing when they are already there at these versions.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-clients
want="openai==3.57.0 huggingface_hub==2.4.0"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - <<'PY' >/dev/null 2>&1
import openai, huggingface_hub
assert openai.__version__ == "3.57.0" and huggingface_hub.__version__ == "2.4.0"
PY
then
    exit 0
fi
python3 -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet $want
"$venv/bin/python" -c 'import openai, huggingface_hub'
