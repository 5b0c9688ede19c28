"""WSGI entry point for gunicorn (``gunicorn 'alliance.wsgi:app'``) and ``flask --app alliance.wsgi``."""

import gc

from alliance import cli
from alliance.app import create_app

app = create_app()
# ``flask --app alliance.wsgi …`` runs the same commands as ``alliance …`` (the app
# factory does not import the CLI, which imports the factory to build its app).
cli.init_app(app)
# Everything the loaded application holds (about 190,000 objects: modules, the ORM's and
# marshmallow's schemas, compiled statements) lives as long as the process, so the
# collector need not walk it: a full collection of a loaded worker took 76-170 ms under
# load, stalling every thread of the worker; after the freeze, 1-6 ms. Start-up's garbage
# is collected first, so none of it is kept for good.
gc.collect()
gc.freeze()
