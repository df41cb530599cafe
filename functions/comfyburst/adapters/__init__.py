"""Thin adapters from the ports in `comfyburst.ports` to Google Cloud clients."""
