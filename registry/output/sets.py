"""Curated candidate sets: made from a query on the ranked candidates, then grown and pruned by hand. Every change
is a new version; old versions stay readable and any two can be compared.

>>> s = create_set(reg, "mg-hosts", {"passed": True}, preset="tunnel", ion="Mg", top=20, author="ana")
>>> add_members(reg, "mg-hosts", ["reg-0123456789abcdef"], note="hollandite-like, check Mn3+ content")
>>> diff_versions(reg, "mg-hosts", 1, 2).added
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import mongoengine
from bson import json_util
from mongoengine.errors import NotUniqueError, OperationError, ValidationError
from pydash import get
from pymongo.errors import OperationFailure

from registry.errors import DatabaseError, RegistryError
from registry.science.criteria import WORKING_IONS, get_preset
from schemas.sets import MEMBER_VALUES, SET_NAME, CandidateSet, SetMember, SetVersion

if TYPE_CHECKING:
    from registry.db.client import Registry

RANK_ORDER = [("passed", -1), ("score", -1)]
UNAUTHORIZED = 13


@dataclass
class MemberChange:
    registry_id: str
    field: str
    old: Any
    new: Any


@dataclass
class SetDiff:
    """What changed between two versions of a set: members added, removed, and values or notes changed."""

    name: str
    old: int
    new: int
    added: list[SetMember] = field(default_factory=list)
    removed: list[SetMember] = field(default_factory=list)
    changed: list[MemberChange] = field(default_factory=list)


def _with_database(uri: str, database: str) -> str:
    """The URI naming `database`: mongoengine takes the database from the URI's path over its `db` argument.
    The authentication database stays what the URI made it, through authSource: its path database, else admin."""
    parts = urlsplit(uri)
    options = parse_qsl(parts.query, keep_blank_values=True)
    path_db = parts.path.lstrip("/")
    if path_db != database and not any(k.lower() == "authsource" for k, _ in options):
        options.append(("authSource", path_db or "admin"))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", urlencode(options), parts.fragment))


@contextmanager
def candidate_sets(reg: Registry) -> Iterator[type[CandidateSet]]:
    """`CandidateSet` bound to this registry's database for the duration of the block.

    Each database gets its own mongoengine connection alias, so several registries (tests, a bundle import) can
    be used in one process. mongoengine's `switch_db` cannot be used: it first opens the class's default alias.
    """
    options = reg.client_options()
    alias = "registry-" + hashlib.sha256(f"{reg.uri}\x1f{reg.database}\x1f{options.get('username')}".encode()
                                         ).hexdigest()[:16]
    mongoengine.connect(alias=alias, host=_with_database(reg.uri, reg.database), tz_aware=True, **options)
    previous = CandidateSet._meta["db_alias"], CandidateSet._meta.get("auto_create_index", True)
    CandidateSet._meta.update(db_alias=alias, auto_create_index=False)
    CandidateSet._collection = None
    try:
        try:
            CandidateSet.ensure_indexes()
        except OperationFailure as exc:  # a read-only user reads without them; its writes fail on their own
            if exc.code != UNAUTHORIZED:
                raise
        yield CandidateSet
    finally:
        CandidateSet._meta.update(db_alias=previous[0], auto_create_index=previous[1])
        CandidateSet._collection = None


def member_from_candidate(candidate: Mapping[str, Any], ion: str, *, note: str | None = None,
                          author: str | None = None, now: datetime | None = None) -> SetMember:
    """A member snapshot of a candidate document's values."""
    values = {name: get(candidate, path.replace("{ion}", ion)) for name, path in MEMBER_VALUES.items()}
    return SetMember(registry_id=candidate["registry_id"], note=note, added_by=author,
                     added_at=now or datetime.now(UTC), **values)


def _check_name(name: str) -> None:
    if not re.fullmatch(SET_NAME, name):
        raise RegistryError(f"bad set name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")


def _load(sets: type[CandidateSet], name: str) -> CandidateSet:
    found = sets.objects(name=name).first()
    if found is None:
        known = sorted(sets.objects.distinct("name"))
        hint = f"; sets: {', '.join(known[:20])}" if known else "; there are no sets yet (registry sets create)"
        raise RegistryError(f"no set named {name!r}{hint}")
    return found


def _version(candidate_set: CandidateSet, version: int | None) -> SetVersion:
    found = candidate_set.at(version)
    if found is None:
        raise RegistryError(f"set {candidate_set.name!r} has versions 1..{candidate_set.version}; "
                            f"there is no version {version}")
    return found


def create_set(reg: Registry, name: str, filter: Mapping[str, Any] | None = None, *, preset: str = "tunnel",
               ion: str = "Mg", top: int | None = None, description: str = "",
               author: str | None = None) -> CandidateSet:
    """A new set (version 1) of the candidates matching `filter` under `preset` and `ion`, best first
    (passed, then score), at most `top` of them. Creating it again with the same definition refreshes it: a new
    version if the members changed, nothing otherwise; another definition under the same name is an error."""
    _check_name(name)
    try:
        get_preset(preset)
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    if ion not in WORKING_IONS:
        raise RegistryError(f"unknown working ion {ion!r}; known: {', '.join(WORKING_IONS)}")
    if top is not None and top < 1:
        raise RegistryError(f"--top must be at least 1, not {top}")
    scope = {"preset": preset, "ion": ion}
    query = {"$and": [dict(filter), scope]} if filter else scope
    try:
        docs = reg.find(query, collection="candidates", sort=RANK_ORDER, limit=top or 0)
    except OperationFailure as exc:
        message = exc.details.get("errmsg") if isinstance(exc.details, dict) else None
        raise RegistryError(f"the database refused the query: {message or exc}") from None
    now = datetime.now(UTC)
    members = [member_from_candidate(d, ion, author=author, now=now) for d in docs]
    query_text = json_util.dumps(dict(filter or {}), sort_keys=True)
    with candidate_sets(reg) as sets:
        existing = sets.objects(name=name).first()
        if existing is not None:
            if (existing.query, existing.preset, existing.ion, existing.top) != (query_text, preset, ion, top):
                raise RegistryError(f"a set named {name!r} already exists with another query; choose another name "
                                    "or add to it (registry sets add)")
            # the same definition again: a re-run refreshes the set, making a version only if its members changed
            old_ids = [m.registry_id for m in existing.versions[-1].members]
            new_ids = [m.registry_id for m in members]
            if old_ids == new_ids:
                return existing
            return _commit(sets, existing, members, "refresh", [i for i in new_ids if i not in old_ids],
                           [i for i in old_ids if i not in new_ids], author)
        candidate_set = sets(
            name=name, description=description, author=author, preset=preset, ion=ion,
            query=query_text, top=top, version=1, created_at=now,
            updated_at=now,
            versions=[SetVersion(number=1, created_at=now, author=author, change="create",
                                 added=[m.registry_id for m in members], members=members)],
        )
        _save(candidate_set)
    return candidate_set


def _save(candidate_set: CandidateSet) -> None:
    try:
        candidate_set.save(force_insert=True)
    except NotUniqueError:
        raise RegistryError(f"a set named {candidate_set.name!r} already exists") from None
    except ValidationError as exc:
        raise RegistryError(f"set {candidate_set.name!r} is not valid: {exc}") from None
    except OperationError as exc:  # mongoengine's wrapper of a database error, e.g. a read-only user's insert
        raise DatabaseError(f"cannot save set {candidate_set.name!r}: {exc}") from None


def _commit(sets: type[CandidateSet], current: CandidateSet, members: list[SetMember], change: str,
            added: list[str], removed: list[str], author: str | None) -> CandidateSet:
    """Push the next version, only if nobody else did since `current` was read."""
    now = datetime.now(UTC)
    number = current.version + 1
    version = SetVersion(number=number, created_at=now, author=author, change=change, added=added, removed=removed,
                         members=members)
    version.validate()
    try:
        updated = sets.objects(id=current.id, version=current.version).update_one(
            push__versions=version, set__version=number, set__updated_at=now)
    except OperationError as exc:
        raise DatabaseError(f"cannot update set {current.name!r}: {exc}") from None
    if not updated:
        raise RegistryError(f"set {current.name!r} was changed by someone else meanwhile; try again")
    return sets.objects(id=current.id).first()


def _unknown_ids(reg: Registry, ids: Iterable[str], candidate_set: CandidateSet) -> str:
    """Why these ids cannot be added, in one line: unranked for the set's preset and ion, or not in the registry."""
    ids = sorted(ids)
    known = {d["registry_id"] for d in reg.find_among("registry_id", ids, "validated", ["registry_id"])}
    parts = []
    if unranked := [i for i in ids if i in known]:
        parts.append(f"not ranked under preset {candidate_set.preset!r} for {candidate_set.ion} "
                     f"(run registry build rank --preset {candidate_set.preset} --ion {candidate_set.ion}): "
                     + ", ".join(unranked))
    if missing := [i for i in ids if i not in known]:
        parts.append("not in the registry: " + ", ".join(missing))
    return "; ".join(parts)


def add_members(reg: Registry, name: str, ids: Iterable[str], *, note: str | None = None,
                author: str | None = None) -> CandidateSet:
    """A new version with these candidates added (values as they are now). An id already in the set is an error,
    unless a note is given: then its note is replaced."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise RegistryError("give at least one registry id to add")
    with candidate_sets(reg) as sets:
        current = _load(sets, name)
        members = list(current.at().members)
        present = {m.registry_id: m for m in members}
        renote = [i for i in ids if i in present]
        if renote and note is None:
            raise RegistryError(f"already in set {name!r}: {', '.join(renote)} (give --note to change a note)")
        new = [i for i in ids if i not in present]
        found = {d["registry_id"]: d for d in reg.find_among(
            "registry_id", new, "candidates", scope={"preset": current.preset, "ion": current.ion})}
        if unknown := [i for i in new if i not in found]:
            raise RegistryError(f"cannot add to {name!r}: {_unknown_ids(reg, unknown, current)}")
        now = datetime.now(UTC)
        members = [SetMember(**{**m.values(), "note": note}) if m.registry_id in renote else m for m in members]
        members += [member_from_candidate(found[i], current.ion, note=note, author=author, now=now) for i in new]
        return _commit(sets, current, members, "add" if new else "note", new, [], author)


def remove_members(reg: Registry, name: str, ids: Iterable[str], *, author: str | None = None) -> CandidateSet:
    """A new version without these members; ids not in the set are an error."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise RegistryError("give at least one registry id to remove")
    with candidate_sets(reg) as sets:
        current = _load(sets, name)
        members = list(current.at().members)
        present = {m.registry_id for m in members}
        if absent := [i for i in ids if i not in present]:
            raise RegistryError(f"not in set {name!r} (version {current.version}): {', '.join(absent)}")
        kept = [m for m in members if m.registry_id not in ids]
        return _commit(sets, current, kept, "remove", [], ids, author)


def delete_set(reg: Registry, name: str) -> int:
    """Delete set NAME with every version; returns how many versions went. Not recoverable: export it first
    (`registry sets export`) to keep a copy that `registry sets import` brings back."""
    with candidate_sets(reg) as sets:
        current = _load(sets, name)
        try:
            current.delete()
        except OperationError as exc:
            raise DatabaseError(f"cannot delete set {name!r}: {exc}") from None
        return current.version


def get_set(reg: Registry, name: str) -> CandidateSet:
    with candidate_sets(reg) as sets:
        return _load(sets, name)


def list_sets(reg: Registry) -> list[CandidateSet]:
    """Every set, most recently changed first."""
    with candidate_sets(reg) as sets:
        return list(sets.objects.order_by("-updated_at"))


def members(candidate_set: CandidateSet, version: int | None = None) -> list[SetMember]:
    """The members of a version (default: the latest)."""
    return list(_version(candidate_set, version).members)


def diff_versions(reg: Registry, name: str, old: int, new: int) -> SetDiff:
    """Members added and removed from version `old` to `new`, and the values and notes that differ."""
    candidate_set = get_set(reg, name)
    before = {m.registry_id: m for m in members(candidate_set, old)}
    after = {m.registry_id: m for m in members(candidate_set, new)}
    diff = SetDiff(name=name, old=old, new=new,
                   added=[m for rid, m in after.items() if rid not in before],
                   removed=[m for rid, m in before.items() if rid not in after])
    for rid in before.keys() & after.keys():
        a, b = before[rid].values(), after[rid].values()
        diff.changed += [MemberChange(rid, f, a[f], b[f]) for f in a if f not in ("added_at", "added_by")
                         and a[f] != b[f]]
    diff.changed.sort(key=lambda c: (c.registry_id, c.field))
    return diff


def member_json(member: SetMember) -> dict[str, Any]:
    """A member as plain JSON (bundles, `sets show --format json`)."""
    out = member.values()
    out["added_at"] = out["added_at"].isoformat() if out["added_at"] else None
    return out


def compare_set(reg: Registry, name: str, members_json: list[Mapping[str, Any]]) -> str | None:
    """Whether a set called `name` is here: None if not, "unchanged" if its latest members equal these (values,
    notes and times), else "conflict"."""
    _check_name(name)
    with candidate_sets(reg) as sets:
        existing = sets.objects(name=name).first()
    if existing is None:
        return None
    here = [member_json(m) for m in existing.at().members]
    return "unchanged" if here == [dict(m) for m in members_json] else "conflict"


def import_set(reg: Registry, data: Mapping[str, Any], members_json: list[Mapping[str, Any]],
               imported_from: Mapping[str, Any], name: str | None = None, check_only: bool = False) -> CandidateSet:
    """A new set from a bundle's description of it (`query` as extended JSON text), as version 1 with change
    "import": its history stays with the exporter, and `imported_from` names the version it was. `check_only`
    validates it without saving: a bundle import checks its set before it writes anything."""
    name = name or data["name"]
    _check_name(name)
    incoming = [SetMember(**{**m, "added_at": datetime.fromisoformat(m["added_at"])}) for m in members_json]
    now = datetime.now(UTC)
    with candidate_sets(reg) as sets:
        candidate_set = sets(
            name=name, description=data.get("description") or "", author=data.get("author"),
            preset=data["preset"], ion=data["ion"], query=data.get("query") or "{}",
            top=data.get("top"), version=1, created_at=now, updated_at=now, imported_from=dict(imported_from),
            versions=[SetVersion(number=1, created_at=now, author=data.get("author"), change="import",
                                 added=[m.registry_id for m in incoming], members=incoming)],
        )
        if check_only:
            try:
                candidate_set.validate()
            except ValidationError as exc:
                raise RegistryError(f"set {name!r} is not valid: {exc}") from None
        else:
            _save(candidate_set)
    return candidate_set
