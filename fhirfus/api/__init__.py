"""HTTP: the FastAPI app, routers, content negotiation and the one error handler."""
