"""Curated candidate sets, kept with mongoengine: a named shortlist of registry ids with the values each had when
it was added, so a set shared today still says what it was judged on after the registry is rebuilt.

Versions are embedded in the set's document as full snapshots of the member list. A set is small (tens to a few
hundred members, ~300 bytes each), so every version of it is one document read away; and a new version is one
atomic single-document update (`$push` plus a check on the current version number), which a separate versions
collection could only give with a transaction. At MongoDB's 16 MB document limit that still leaves room for
~50,000 member entries summed over all versions.
"""

from __future__ import annotations

from typing import Any

from bson import json_util
from mongoengine import (
    BooleanField,
    DateTimeField,
    DictField,
    Document,
    EmbeddedDocument,
    EmbeddedDocumentListField,
    FloatField,
    IntField,
    ListField,
    StringField,
)

SET_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
ALIAS = "registry"  # the default; `registry.output.sets` binds the class to one registry's database per call

# Member fields copied from a candidate document: attribute -> dotted path in the candidate.
MEMBER_VALUES = {
    "candidate_id": "candidate_id",
    "formula": "formula_pretty",
    "origin_kind": "origin_kind",
    "passed": "passed",
    "score": "score",
    "formation_energy_per_atom": "values.formation_energy_per_atom",
    "e_above_hull": "values.e_above_hull",
    "band_gap": "values.band_gap",
    "has_1d_channel": "values.has_1d_channel",
    "channel_axis": "values.channel_axis",
    "free_sphere": "values.free_sphere",
    "admits": "values.admits.{ion}",
}


class SetMember(EmbeddedDocument):
    """One member as it stood when added: the values are a snapshot, not a live view of the registry."""

    registry_id = StringField(required=True)
    candidate_id = StringField()
    formula = StringField()
    origin_kind = StringField()
    passed = BooleanField()
    score = FloatField()
    formation_energy_per_atom = FloatField()
    e_above_hull = FloatField()
    band_gap = FloatField()
    has_1d_channel = BooleanField()
    channel_axis = StringField()
    free_sphere = FloatField(help_text="Zeo++ Df (Å) of the structure")
    admits = BooleanField(help_text="Whether an open channel admits the set's working ion")
    note = StringField()
    added_at = DateTimeField(required=True)
    added_by = StringField()

    def values(self) -> dict[str, Any]:
        """The snapshot as a plain dict (what diffs and bundles compare)."""
        return {name: self[name] for name in self._fields_ordered}


class SetVersion(EmbeddedDocument):
    """One state of the member list and the change that made it."""

    number = IntField(required=True, min_value=1)
    created_at = DateTimeField(required=True)
    author = StringField()
    change = StringField(required=True, choices=("create", "add", "remove", "note", "import", "refresh"))
    added = ListField(StringField())
    removed = ListField(StringField())
    members = EmbeddedDocumentListField(SetMember)


class CandidateSet(Document):
    """A named, versioned set of candidates and the query and ranking it was made from."""

    name = StringField(required=True, unique=True, regex=SET_NAME)
    description = StringField(default="")
    author = StringField()
    preset = StringField(required=True)
    ion = StringField(required=True)
    query = StringField(required=True, default="{}",
                        help_text="The Mongo filter on candidates, as extended JSON ('$' cannot start a field name)")
    top = IntField(min_value=1)
    version = IntField(required=True, min_value=1, help_text="The latest version's number")
    versions = EmbeddedDocumentListField(SetVersion)
    created_at = DateTimeField(required=True)
    updated_at = DateTimeField(required=True)
    imported_from = DictField(help_text="Bundle name, manifest hash and time, for a set that came from a bundle")

    meta = {"collection": "candidate_sets", "db_alias": ALIAS, "indexes": ["updated_at"]}

    @property
    def filter(self) -> dict[str, Any]:
        return json_util.loads(self.query)

    def at(self, version: int | None = None) -> SetVersion | None:
        """The given version (default: the latest), or None when there is no such version."""
        number = self.version if version is None else version
        return next((v for v in self.versions if v.number == number), None)
