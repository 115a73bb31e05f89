"""`python -m boxctl`: the same as the `boxctl` executable."""

from boxctl.entry import main

main()
