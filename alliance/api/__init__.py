"""The hub's HTTP edge: blueprints, schemas and the one error handler."""
