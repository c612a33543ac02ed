"""ASGI entry point: `uvicorn api.main:app`."""

from api.app import main_app

app = main_app()
