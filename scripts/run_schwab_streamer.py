#!/usr/bin/env python3
"""The Schwab streamer alone, into Redis pub/sub (the trading bus) and the lake;
``--dry-run`` checks the settings, Redis and a token refresh without opening the websocket.

Same as ``tickpipe schwab stream``; see the README, Schwab.
"""

import sys

from tickpipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["schwab", "stream", *sys.argv[1:]]))
