"""inotify file watching: many project roots, one inotify fd, driven by the asyncio loop.

Split by job: ``filters`` (what a spec lets through), ``table`` (watches and the view), ``settle`` (debounce,
coalescing, batches), ``rescan`` (walking trees, the overflow rescan), and ``engine`` (the reader tying them).

Design notes (why it looks the way it does):

* One ``INotify`` fd for the whole service, registered with ``loop.add_reader``: no thread, no
  polling, nothing runs while the trees are idle.
* inotify is not recursive, so every directory below a spec path gets its own watch. A new
  directory is watched *and then scanned*, so files created before the watch existed
  (``mkdir -p a/b/c && touch a/b/c/f``) are still reported.
* The engine keeps a small view of each watched directory: its watch descriptor and the names of
  the non-directory entries. Memory is O(watched entries), never O(events). The view lets a
  rescan after a queue overflow report creates, deletes and (via ctime) modifications exactly.
* Debounce is a per-path settle window; all paths that settle in the same timer callback of a root
  form one flush, and a flush of more than ``batch_threshold`` paths goes out as ``file.batch`` parts.
* The view is the authority on what exists: a scan supersedes queued events, and an event that
  contradicts the view (a delete or modify of a name it does not have) is stale and ignored, so events
  read late are never applied at a place a scan already saw in a later state.

Semantics (the contract the event bus relies on):

* Per window, the net change of each path is worked out from contents (see ``settle``): it existed
  before or not, exists now or not, and which pre-window path its content came from. Deleted or
  moved away -> delete or move-from; created -> create; replaced or changed -> modify; content from
  elsewhere -> move. Round trips are a modify; renames onto existing paths report what they destroyed.
* A rename leaves its old path in event order (IN_MOVED_FROM) and lands at IN_MOVED_TO; unpaired it is
  a delete. Directories are watched, never reported themselves.
* A root flushes at most once per debounce window, so a sustained storm becomes one flush per window.
* ``file.batch``: parts of at most ``batch_cap`` (default 1,000) paths, with ``path_kinds``, the exact
  ``count`` and ``kinds`` of the flush, its ``flush`` id, ``part`` and ``parts``.
* Names that are not UTF-8 go out with U+FFFD plus ``*_b64`` of the raw bytes (``names``).
* Overflow (IN_Q_OVERFLOW): ``file.rescan {"reason": "overflow"}`` for every root, then every
  tree is walked against the view: new names -> create, missing names -> delete, files whose
  ctime is not older than the start of the previous read (minus 1 s slack) -> modify.
* Watch limit (ENOSPC): refused directories are walked and kept in the table without a watch, so
  ``unwatched_dirs`` is exact (health() re-checks them first); while any exist, a timer re-checks
  them every ``RECHECK_S`` and at once when watches are freed or on set_root (reload).
"""

from .engine import FileWatcher
from .filters import IgnoreMatcher, WatchSpec
from .settle import BATCH_PATH_CAP, Emit

__all__ = ["BATCH_PATH_CAP", "Emit", "FileWatcher", "IgnoreMatcher", "WatchSpec"]
