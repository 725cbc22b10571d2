#!/usr/bin/env python3
"""The seed's entry point: the same as ``tickpipe run`` (``--host``, ``--port``)."""

import sys

from tickpipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))
