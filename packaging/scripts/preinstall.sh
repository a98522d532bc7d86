#!/bin/sh
# Before any file of aiwg-service is unpacked (deb preinst; rpm %pre, $1 = 1 install, 2 upgrade).
#
# The bundled venv runs only on the interpreter it was built with (@PYTHON@). rpm checks the package's
# Requires before this runs, so getting here without it means --nodeps: refuse with a clear message
# before anything is unpacked, rather than leave commands that cannot start. dpkg does not check this
# here: Depends: does, and after `dpkg -i` without it `apt-get install -f` installs it (postinst then
# verifies the venv imports).
set -e
case "$1" in
  [0-9]*)
    if ! [ -x /usr/bin/@PYTHON@ ]; then
      echo "aiwg-service: /usr/bin/@PYTHON@ is missing. This package bundles its Python dependencies in a" >&2
      echo "  virtualenv built for @PYTHON@, which this system does not have: install @PYTHON@ first" >&2
      echo "  (Fedora: dnf install @PYTHON@; openSUSE: zypper install python@PYNODOT@), or build a package" >&2
      echo "  for this system's Python with packaging/build.sh. Nothing was installed." >&2
      exit 1
    fi
    ;;
esac
exit 0
