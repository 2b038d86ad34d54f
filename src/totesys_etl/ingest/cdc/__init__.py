"""Change data capture (contract §10): the ingest read from a logical replication slot.

`pgoutput.py` decodes the messages, `slot.py` reads and advances the slot over plain SQL,
`fold.py` turns a run's committed transactions into the newest version (or the delete) of each
changed row, and `run.py` writes them in the lake's layout with a manifest that records the LSN
range. readme_files/adr/0005-change-data-capture.md says why it is built this way.
"""
