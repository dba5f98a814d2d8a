"""Eviction policies, registered by name: one small module each in this package.

`make("snapkv", budget=0.25, kernel_size=7)` builds a validated policy;
`REGISTRY` maps every name to its class. Adding a policy is adding a module
here with a `@register`ed dataclass (see base.py for what it implements).
"""

from __future__ import annotations

import importlib
import pkgutil

from transform.policies.base import REGISTRY, Policy, PolicyError, Stats

__all__ = ["REGISTRY", "Policy", "PolicyError", "Stats", "make", "names"]


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")


def names() -> list[str]:
    _load_all()
    return sorted(REGISTRY)


def make(name: str, **params: object) -> Policy:
    """A policy by registry name; unknown names and parameters are errors that list what is accepted."""
    _load_all()
    if name not in REGISTRY:
        raise PolicyError(f"unknown policy {name!r}; known policies: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[name]
    accepted = cls.parameters()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise PolicyError(f"{name}: unknown parameter(s) {unknown}; accepted: {', '.join(accepted)}")
    return cls(**params)
