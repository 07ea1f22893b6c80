"""The hmq API: a stateless FastAPI app over a SQL index and an object store.

``lambdas.app.create_app(Settings)`` builds it; ``lambdas.handler.handler`` wraps it for AWS
Lambda and ``python -m lambdas.serve`` runs it under uvicorn.
"""
