"""The three papers' experiments as grids of runs."""
