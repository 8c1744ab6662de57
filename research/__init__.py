"""Research instruments: A/B runs, their comparison and results page, and loss diagnostics (see README.md)."""
