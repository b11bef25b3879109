"""What they have: clients for the configured upstream registries."""
