"""serve's HTTP API and page (FastAPI), over the plain network: no Lightning."""
