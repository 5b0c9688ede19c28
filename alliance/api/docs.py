"""A readable API reference at ``/docs``, rendered on the server from ``/openapi.json``.

It needs no JavaScript and no CDN, so it works on an offline operator network too.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template

blueprint = Blueprint("docs", __name__)
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@blueprint.get("/docs")
def api_reference() -> str:
    """Every operation with its security, parameters, request body and responses."""
    spec = current_app.extensions["alliance.api"].spec.to_dict()
    operations = [
        {"method": method.upper(), "path": path, **operation}
        for path, item in sorted(spec.get("paths", {}).items())
        for method, operation in item.items() if method in HTTP_METHODS
    ]
    return render_template("api_reference.html", spec=spec, operations=operations,
                           schemas=spec.get("components", {}).get("schemas", {}))


def init_app(app: Flask) -> None:
    """Register the reference page."""
    app.register_blueprint(blueprint)
