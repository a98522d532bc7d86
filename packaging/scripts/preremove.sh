#!/bin/sh
# Before aiwg-service's files go away (deb prerm remove|upgrade|deconfigure|failed-upgrade; rpm %preun,
# $1 = 0 erase, 1 upgrade, which rpm runs *after* the new version's %post).
#
# On removal every user's units that this package shipped are stopped and disabled, for each user whose
# manager runs now (root can reach them through their runtime directory); a user whose manager is not
# running gets the same done when they next log in only by hand, so the message says what to run.
# Upgrades stop nothing: running services keep their agents and pick up the new code when restarted.
set -e
UNITS="@USER_UNITS@"   # every unit the package ships (build.sh fills this in)

stop_for_running_users() {
  command -v runuser >/dev/null 2>&1 || return 0
  for private in /run/user/*/systemd/private; do
    [ -S "$private" ] || continue   # the socket every running user manager listens on
    dir=${private%/systemd/private}
    uid=${dir##*/}
    user=$(getent passwd "$uid" | cut -d: -f1) || continue
    [ -n "$user" ] || continue
    # shellcheck disable=SC2086
    # (up to the unit's own stop timeout: a running service winds its agents down first)
    if timeout 100 runuser -u "$user" -- env -u DBUS_SESSION_BUS_ADDRESS XDG_RUNTIME_DIR="$dir" \
        sh -c 'systemctl --user stop "aiwg@*.service" "aiwg@*.socket"; systemctl --user disable --now "$@"' \
        sh $UNITS >/dev/null 2>&1; then
      echo "aiwg-service: stopped and disabled for $user" >&2
    else
      echo "aiwg-service: could not stop it for $user; they should run: systemctl --user disable --now $UNITS" >&2
    fi
  done
}

drop_bytecode() {
  venv="${DPKG_ROOT:-}/usr/lib/aiwg-service"
  [ -d "$venv" ] && find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
}

case "$1" in
  remove|0)
    stop_for_running_users
    drop_bytecode
    echo "aiwg-service: removed for every user whose systemd manager was running. Anyone else who enabled" >&2
    echo "  it runs, at their next login:  systemctl --user disable --now $UNITS" >&2
    echo "  Each user's state and configuration directories are left alone." >&2
    ;;
  upgrade|deconfigure|failed-upgrade)
    drop_bytecode   # deb only: the new version's postinst compiles its own
    ;;
esac
exit 0
