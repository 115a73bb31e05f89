"""boxctl: the Box client, a synced folder with a git/rsync-style command line."""

__version__ = "0.1.0"
