"""totesys-etl: the totesys OLTP database to a star-schema warehouse, through an S3 data lake."""

__version__ = "0.1.0"
