"""What clients see: routes, thin handlers, and the one error table."""
