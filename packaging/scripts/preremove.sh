#!/bin/sh
# Before aiwg-service's files go away (deb prerm remove|upgrade|...; rpm %preun, $1 = 0 erase, 1 upgrade).
# Users' services are theirs: nothing is stopped here (root cannot reach every user's manager, and an
# upgrade must not kill running agents). On removal, say what each user should do.
set -e
case "$1" in
  remove|0)
    echo "aiwg-service: removing. Users whose service still runs should stop it with" >&2
    echo "  systemctl --user disable --now aiwg.socket aiwg.service" >&2
    echo "  Their state (~/.local/state/aiwg or ~/.config/aiwg) and configuration are left alone." >&2
    ;;
esac
exit 0
