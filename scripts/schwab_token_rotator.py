#!/usr/bin/env python3
"""Keep data/schwab_tokens.json and .env fresh:
``--access-interval-minutes 25 --refresh-interval-days 6``.

Same as ``tickpipe schwab rotate``; see the README, Schwab.
"""

import sys

from tickpipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["schwab", "rotate", *sys.argv[1:]]))
