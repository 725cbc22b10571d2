"""Feed adapters; each turns one feed's wire format into tickpipe events."""
