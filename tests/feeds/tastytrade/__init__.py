"""tastytrade / DXLink: parser, session, feed against the local fake, end to end."""
