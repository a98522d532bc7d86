#!/usr/bin/env bash
# Regenerate the hash-pinned lock files that packaging/build.sh builds the bundled venv from:
#   requirements.lock        what the package ships (pyproject.toml's dependencies, resolved)
#   build-requirements.lock  pip, setuptools and wheel, which build the venv and compile systemd-python
# Every file of every pinned version is hashed (all platforms), so any machine's build checks what it
# downloads. Run after changing pyproject.toml's dependencies; tests/test_packaging_lock.py fails until then.
# Needs pip-tools (pip install pip-tools) in the interpreter given as $PYTHON (default: python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
opts=(-q --generate-hashes --allow-unsafe --strip-extras --no-header --annotation-style line
      --no-emit-index-url --no-emit-find-links --no-emit-trusted-host)
"$PY" -m piptools compile "${opts[@]}" -o packaging/requirements.lock pyproject.toml
"$PY" -m piptools compile "${opts[@]}" -o packaging/build-requirements.lock packaging/build-requirements.in
