"""The pure posting core: the state of the members a batch of postings touches. Like
``rules/``, no database, no I/O, no clock; the store loads the state and writes back what
changed."""
