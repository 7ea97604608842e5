"""Tables, engine and sessions; knows the SQLite and PostgreSQL differences."""
