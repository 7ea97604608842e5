"""Pure program rules: the program model and its calculations (no database, no I/O)."""
