"""Event sources and the bus they publish on: inotify watcher, cron scheduler, wall timer, and the events.* RPC."""
