"""The ``kdlens`` command line (Typer): thin, parses and validates, calls the library."""
