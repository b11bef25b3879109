"""The site's own registry: local repositories clients push to (issue 17)."""
