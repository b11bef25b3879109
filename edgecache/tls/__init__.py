"""HTTPS: the server's certificates (server.py), issued in a child process (ca.py: the only
importer of `cryptography`) from the self-managed CA or from an operator's site CA (site.py)."""
