"""JFrog sensors: they answer "done yet?"; judging is a separate task."""
