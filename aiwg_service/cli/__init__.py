"""aiwgctl: the command-line client. Imports protocol, config and paths only, never the service."""
