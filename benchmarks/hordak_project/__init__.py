"""A minimal Django project for django-hordak, the ledger benchmark's peer; never imported by the hub."""
