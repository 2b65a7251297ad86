"""One module per model: a Ray-free engine class and a thin Serve deployment."""
