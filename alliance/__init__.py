"""The points-alliance clearing house hub."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alliance.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """``create_app`` on first use: importing a pure module (``alliance.domain``) must not build the web app.

    ``settlement``'s pure core imports ``alliance.domain``; an eager import of the app here
    made ``import settlement.cycles`` run the app, which imports the settlement services,
    which import ``settlement.cycles`` half-initialised.
    """
    if name == "create_app":
        from alliance.app import create_app

        return create_app
    raise AttributeError(f"module 'alliance' has no attribute {name!r}")
