"""JFrog hooks."""
