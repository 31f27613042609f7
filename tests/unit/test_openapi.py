"""`hbw serve`'s OpenAPI document: valid OpenAPI 3.1, and naming exactly the routes the app serves
(a route added without its description, or described and gone, fails here)."""

from __future__ import annotations

import re

import fakeredis
import sqlalchemy as sa
from openapi_spec_validator import validate
from starlette.routing import Route

from worker.http.app import create_app
from worker.http.openapi import document
from worker.runtime.broker import make_broker
from worker.settings import Settings


def served_operations() -> set[tuple[str, str]]:
    settings = Settings(**{"DATABASE_URL": "postgresql://unit@127.0.0.1:1/unit", "REDIS_URL": "redis://unit"})
    broker = make_broker(settings, client=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
    engine = sa.create_engine("postgresql+psycopg://unit@127.0.0.1:1/unit")  # (never connected)
    app = create_app(settings, broker=broker, engine=engine)
    return {
        (re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path), method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods - {"HEAD"}
    }


def test_the_document_is_valid_openapi():
    validate(document())


def test_the_document_names_exactly_the_routes_served():
    described = {(path, method) for path, operations in document()["paths"].items() for method in operations}
    assert described == served_operations()
