"""Starting the local services: the server processes (`servers`), the admin steps on them
(`admin`), and `up`/`down` with what they record under `.local/` (`lifecycle`)."""
