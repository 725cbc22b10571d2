"""Quality checks: pure vectorised rules, and the stage that keeps state and quarantines."""
