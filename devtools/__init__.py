"""Development-only tools: never copied into an image (the Dockerfiles copy dags/, plugins/ and include/ only)."""
