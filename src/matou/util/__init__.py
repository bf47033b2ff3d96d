"""Small helpers with no project dependencies."""
