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
* Debounce is a per-path settle window: a path is delivered once it has been quiet for
  ``debounce_ms``; all paths that settle in the same timer callback of a root form one flush,
  and a flush of more than ``batch_threshold`` paths becomes a single ``file.batch`` event.

Semantics (the contract the event bus relies on):

* Coalescing inside one window, per path: create+modify -> create; modify+delete -> delete;
  create+delete -> nothing (the path neither existed before nor exists now); delete+create ->
  modify (replaced); a rename of a file created in the window -> create of the new name (modify
  if it replaced an existing file: atomic save); a->b->c -> one move a->c; move then delete of
  the new name -> delete of the old name. Directories are watched, never reported themselves.
* A root flushes at most once per debounce window, so a sustained storm becomes one batch per
  window; latency for a single path is debounce_ms (at most 2x under load). ``debounce_ms=0``
  delivers on the next loop iteration, coalescing only what arrived in the same read.
* ``file.batch``: ``paths`` holds at most ``batch_cap`` (default 1,000) entries, ``count`` is
  exact, ``truncated`` tells whether the list was cut; moves list both names.
* Overflow (IN_Q_OVERFLOW): ``file.rescan {"reason": "overflow"}`` for every root, then every
  tree is walked against the view: new names -> create, missing names -> delete, files whose
  ctime is not older than the start of the previous read (minus 1 s slack) -> modify. Lost
  events happened after that read, so no change is lost; a few recent files may be reported
  twice. Memory stays O(watched entries).
* Watch limit (ENOSPC): counted per root as ``unwatched_dirs``, explained in health()
  ``last_error`` with the sysctl to raise, logged once per root, retried on set_root/rescan.
  Files in unwatched directories are still reported when the directory is first scanned.
"""

from .engine import FileWatcher
from .filters import IgnoreMatcher, WatchSpec
from .settle import BATCH_PATH_CAP, Emit

__all__ = ["BATCH_PATH_CAP", "Emit", "FileWatcher", "IgnoreMatcher", "WatchSpec"]
