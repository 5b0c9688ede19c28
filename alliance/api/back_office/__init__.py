"""The back-office API for staff tools and systems, under ``/back-office/v1``."""
