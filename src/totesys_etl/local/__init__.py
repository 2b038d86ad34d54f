"""The local runtime: services, a totesys generator, and the drivers that play AWS's part.

Nothing under `local/` is packaged into a Lambda; the stages never import it.
"""
