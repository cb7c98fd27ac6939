"""Apps that exist only for the tests (the CLI must serve them without importing them)."""
