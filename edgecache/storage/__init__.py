"""What we have: content-addressed files on disk and the SQLite index beside them."""
