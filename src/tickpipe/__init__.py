"""tickpipe: financial tick data in, clean history and real-time queries out."""

__version__ = "0.1.0"
