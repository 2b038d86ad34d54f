"""The source's data: its tables (`source_db`), the seeded history (`seed`), the changes a live
totesys makes (`simulate`) and the fixed snapshot (`snapshot`)."""
