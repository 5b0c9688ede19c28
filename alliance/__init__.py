"""The points-alliance clearing house hub."""

from alliance.app import create_app

__all__ = ["create_app"]
