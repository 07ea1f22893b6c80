"""hmq worker."""
