"""WSGI entry point for gunicorn: ``gunicorn 'alliance.wsgi:app'``."""

from alliance import create_app

app = create_app()
