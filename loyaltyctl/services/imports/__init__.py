"""Bulk imports: members from a CRM, purchases, returns and adjustments from tills.

A file is read in batches. For each batch the importer parses every row, looks up what
the rows refer to with a handful of set queries (members, references, open lots,
qualifying activity), applies the rows in file order in memory with the same pure rules
and the same steps as ``services.txns`` / ``services.members`` / ``services.ledger``, and
stores the new rows with bulk inserts (``executemany`` on SQLite, ``COPY`` on
PostgreSQL). The result is the ledger that posting the rows one by one would have made.

The transactions are chosen in ``run``: one per batch (a killed import keeps what it
committed, and a re-run sees those rows as duplicates by their references) or one for the
whole file (all or nothing). ``Importer.apply`` works inside whichever it is given.

- ``reading``: the file formats, columns and rows (``ImportFile``);
- ``rejects``: why a row was refused, and the rejects file;
- ``rulebook``: each program version's rules with their per-row values cached, and the
  qualifying activity kept across batches (``Tracker``);
- ``batch``: one batch in memory (credit, debit, write) and the ``Importer`` base;
- ``txn_rows``, ``member_rows``: ``txn import`` and ``member import``;
- ``run``: an import from start to end, and its transactions.

The member state a batch changes is ``ledger.state``; the SQL, ``store.bulk``. Nothing is
imported here, so that a module of the package loads only what it uses.
"""
