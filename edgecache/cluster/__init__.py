"""Cluster mode: the nodes of one site share one WAN download per blob (issue 16)."""
