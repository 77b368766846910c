"""`connector serve`: the HTTP search and answer API (FastAPI on uvicorn, the `serve` extra)
and the page at `/` to try it in. It reads through `connector.query`, like `search()`."""
