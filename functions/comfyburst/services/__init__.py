"""Use cases: each takes its ports and `now`, and is called by one entry point."""
