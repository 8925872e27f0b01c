"""JFrog triggers: tiny, async, serialisable; each run() yields exactly one event."""
