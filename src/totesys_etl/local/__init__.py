"""The local runtime, by concern: `services/` starts PostgreSQL and moto's server, `source/` makes
and changes the source's data, `drive/` plays AWS's part (ticks, notifications, the demo).

Nothing under `local/` is packaged into a Lambda; the stages never import it
(test/test_architecture.py fails when one does).
"""
