"""Helpers that write small dataset files in the real on-disk formats (for tests)."""
