"""The HTTP API's shapes, shared by the gateway (``graphs/``) and the client (``clients/``).

Pydantic only, no Ray or numpy: the light client install carries it.
"""
