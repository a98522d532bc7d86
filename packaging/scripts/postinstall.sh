#!/bin/sh
# After aiwg-service's files are in place (deb postinst configure [OLD]; rpm %post, $1 = 1 install,
# >= 2 upgrade). Enables, starts and restarts nothing: each user opts in with
# `systemctl --user enable --now aiwg.socket`, and running services keep their code until their user
# restarts them.
set -e
venv="${DPKG_ROOT:-}/usr/lib/aiwg-service"
case "$1" in
  configure) upgrade=${2:-} ;;
  1) upgrade= ;;
  [0-9]*) upgrade=yes ;;
  *) exit 0 ;;   # deb abort-upgrade/abort-remove/...: the old files are back as they were
esac

# Bytecode for this machine's interpreter (the package ships none; prerm/postrm remove it again).
# unchecked-hash: valid whatever mtimes the package manager set.
"$venv/bin/python" -I -m compileall -q -f -j0 --invalidation-mode unchecked-hash "$venv/lib" >/dev/null 2>&1 || true

# The venv must work with this machine's interpreter (only a forced install can get here without it).
if ! "$venv/bin/python" -I -c 'import aiwg_service.main, msgspec, uvloop, cronsim, inotify_simple, systemd.daemon' \
    >/dev/null 2>&1; then
  echo "aiwg-service: the bundled virtualenv in /usr/lib/aiwg-service does not run with /usr/bin/@PYTHON@" >&2
  echo "  (was the package installed without its dependencies?). Install @PYTHON@, or rebuild the" >&2
  echo "  package for this system's Python with packaging/build.sh." >&2
  exit 1
fi

if [ -n "$upgrade" ]; then
  echo "aiwg-service: upgraded. Running services keep the old code until each user runs" >&2
  echo "  systemctl --user daemon-reload && systemctl --user restart aiwg.service" >&2
else
  echo "aiwg-service: installed; nothing is enabled. Each user who wants it runs" >&2
  echo "  systemctl --user enable --now aiwg.socket" >&2
fi
if ! [ -d /run/systemd/system ]; then
  echo "aiwg-service: this system was not booted with systemd, so there is no systemd user manager to" >&2
  echo "  run the units in /usr/lib/systemd/user. Run the service in the foreground instead:" >&2
  echo "  aiwg-service run --project DIR (see man aiwg-service)." >&2
fi
exit 0
