"""Plugins by name: the gateway's built-ins first, then Python entry points.

An organisation ships its own hook, usage or audit plugin in a package of its own that declares
an entry point in one of the groups below (``pyproject.toml``)::

    [project.entry-points."llmgw.hooks"]
    acme_moderation = "acme_llm.hooks:ModerationHook"

and names it in the gateway configuration (``tenants.<t>.hooks: [{name: acme_moderation, ...}]``,
``tenants.<t>.plugins.usage``). The object an entry point names is a *factory* (a class or a
function): it is called with the configured options as keyword arguments and must return an
object with every member of the role's Protocol (``create`` checks that, naming what is missing).

The loader is generic (a group name and the Protocol expected), so each role uses the same one.
Names are resolved once, at start: ``names`` (no import) serves configuration validation, ``create``
(imports the entry point's module) the services. A built-in name wins over an entry point of the
same name, so an installed package can never replace a built-in behind the configuration's back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar, cast

HOOKS = "llmgw.hooks"
USAGE = "llmgw.usage"
AUDIT = "llmgw.audit"

T = TypeVar("T")
Factory = Callable[..., Any]


class PluginError(ValueError):
    """A plugin that cannot be found, loaded, built or is not what its role needs; the message
    names the group, the name and the problem."""


def installed(group: str) -> dict[str, EntryPoint]:
    """The entry points of ``group`` in the installed distributions (read now, not cached: a
    package installed while the process runs is seen by the next call)."""
    return {ep.name: ep for ep in entry_points(group=group)}


def names(group: str, builtins: Mapping[str, Factory] | None = None) -> set[str]:
    """Every name ``group`` resolves: the built-ins and the installed entry points (nothing imported)."""
    return set(builtins or ()) | set(installed(group))


def load(group: str, name: str, builtins: Mapping[str, Factory] | None = None) -> Factory:
    """The factory behind ``name``: the built-in of that name, else the entry point's object."""
    if builtins and name in builtins:
        return builtins[name]
    eps = installed(group)
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(sorted(names(group, builtins))) or "none"
        raise PluginError(f"no {group} plugin named {name!r} (known: {known})")
    try:
        factory = ep.load()
    except Exception as exc:
        raise PluginError(
            f"{group} plugin {name!r} ({ep.value}) could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(factory):
        raise PluginError(f"{group} plugin {name!r} ({ep.value}) is not a class or function")
    return cast(Factory, factory)


def create(
    group: str,
    name: str,
    role: type[T],
    builtins: Mapping[str, Factory] | None = None,
    /,
    *args: Any,
    **options: Any,
) -> T:
    """``load(group, name)(*args, **options)``, checked against ``role`` (a Protocol)."""
    factory = load(group, name, builtins)
    try:
        obj = factory(*args, **options)
    except TypeError as exc:  # mostly options the factory does not take
        raise PluginError(f"{group} plugin {name!r}: {exc}") from exc
    except ValueError as exc:  # an option's value it refuses
        raise PluginError(f"{group} plugin {name!r}: {exc}") from exc
    missing = missing_members(obj, role)
    if missing:
        raise PluginError(f"{group} plugin {name!r} is not a {role.__name__}: it lacks {', '.join(missing)}")
    return cast(T, obj)  # missing_members found every member of role


def protocol_members(role: type) -> list[str]:
    """The public attributes and methods ``role`` (a Protocol, or any class) declares, its bases' too."""
    members: dict[str, None] = {}
    for cls in reversed(role.__mro__):
        if cls is object or cls.__module__ == "typing":
            continue
        for key in (*cls.__dict__, *getattr(cls, "__annotations__", {})):
            if not key.startswith("_"):
                members[key] = None
    return list(members)


def missing_members(obj: object, role: type) -> list[str]:
    return [m for m in protocol_members(role) if not hasattr(obj, m)]
