"""The sync rules: local changes, push, pull with its conflict rules, restore, device block reuse.

The engine never prints and never builds a URL: it talks to the server through boxctl.api, to the
disk through boxctl.local, and moves blocks through boxctl.transfer.
"""

from boxctl.engine.core import Engine, create_index
from boxctl.engine.pull import MAX_FEED_PAGES
from boxctl.engine.results import LocalChange, Progress, PullResult, PushResult, Status

__all__ = ["MAX_FEED_PAGES", "Engine", "LocalChange", "Progress", "PullResult", "PushResult", "Status", "create_index"]
