"""Sierra Chart feed (being built: see the Sierra Chart issue)."""
