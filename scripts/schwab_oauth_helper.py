#!/usr/bin/env python3
"""Log in to Schwab once (browser, OAuth2 with PKCE) and save the refresh token to .env.

Same as ``tickpipe schwab oauth``; see the README, Schwab.
"""

import sys

from tickpipe.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["schwab", "oauth", *sys.argv[1:]]))
