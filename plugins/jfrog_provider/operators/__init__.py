"""JFrog operators."""
