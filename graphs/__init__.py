"""Compositions of deployments (retrieval, voice, ingest) and the HTTP ingress."""
