"""The three papers' experiments as grids of runs, and the demo."""
