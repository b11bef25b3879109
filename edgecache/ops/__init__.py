"""Day two: what an operator does to a running site. Runtime pins (pins.py, their admin API
admin.py and CLI pinscli.py), the prefetch schedule (prefetch.py, prefetchsettings.py), and the
store's inventory commands (cachecli.py: ls, du, verify; usage.py: du's report)."""
