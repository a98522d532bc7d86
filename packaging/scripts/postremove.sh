#!/bin/sh
# After aiwg-service's files are gone (deb postrm remove|purge|upgrade|...; rpm %postun, $1 = 0 erase,
# 1 upgrade). The package ships its bytecode, so only what Python wrote later (e.g. `python -O` run as
# root) can be left in /usr/lib/aiwg-service: remove that and the then empty directories. Users' homes
# (state, configuration, enable symlinks in their own systemd directory) are never touched, purge included.
set -e
case "$1" in
  remove|purge|0)
    venv="${DPKG_ROOT:-}/usr/lib/aiwg-service"
    if [ -d "$venv" ]; then
      find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
      find "$venv" -depth -type d -empty -delete 2>/dev/null || true
    fi
    ;;
esac
exit 0
