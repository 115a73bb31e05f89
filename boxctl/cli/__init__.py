"""The `boxctl` command line: one module per command family, one options object, one printer.

It parses arguments, calls the engine or the API client, prints, and maps errors to exit codes;
it holds no HTTP and no sync rules.
"""

from boxctl.cli.app import app, main

__all__ = ["app", "main"]
