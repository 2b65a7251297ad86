"""One module per API area; each exposes ``router``, an APIRouter of ``EdgeRoute``s."""
