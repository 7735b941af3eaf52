"""Turning typed documents into what MongoDB stores."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


def to_mongo(model: BaseModel, **dump_kwargs: Any) -> dict[str, Any]:
    """A JSON-mode dump (enums, elements and structures as plain, queryable JSON) that keeps top-level
    datetimes as BSON dates, so `last_updated` sorts and compares as a date (maggma relies on that)."""
    doc = model.model_dump(mode="json", **dump_kwargs)
    for name in doc:
        value = getattr(model, name, None)
        if isinstance(value, datetime):
            doc[name] = value
    return doc
