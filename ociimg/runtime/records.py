"""``@record``: the subset of ``@dataclass`` the runtime's records use, at a fraction of
its start-up cost.

``import dataclasses`` loads inspect (with ast, dis, tokenize, linecache) and each
decorated class execs five or six generated methods; for the runtime's eighteen records
that was ~10 ms of every ``ociimg-runtime`` start. ``record`` generates only ``__init__``
(one exec per class) and shares one ``__repr__``/``__eq__``/``__hash__``/``__setattr__``
implementation. Supported: annotated fields with defaults or ``field(default_factory=)``,
``frozen`` (attribute assignment raises FrozenInstanceError), ``slots``; ``asdict()`` and
``replace()`` behave like dataclasses'. Not supported: inheritance between records,
``ClassVar``/``InitVar``, ``__post_init__``, ordering."""

from __future__ import annotations

from collections.abc import Callable

_MISSING = object()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record (dataclasses' exception of that name)."""


class _Factory:
    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], object]) -> None:
        self.factory = factory


def field(*, default_factory: Callable[[], object]) -> object:
    return _Factory(default_factory)


def _repr(self: object) -> str:
    inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__record_fields__)
    return f"{type(self).__qualname__}({inner})"


def _values(self: object) -> tuple:
    return tuple(getattr(self, n) for n in self.__record_fields__)


def _eq(self: object, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: object) -> int:
    return hash(_values(self))


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


def record(cls: type | None = None, /, *, frozen: bool = False,
           slots: bool = False) -> type | Callable[[type], type]:
    def wrap(c: type) -> type:
        return _build(c, frozen, slots)
    return wrap if cls is None else wrap(cls)


def _build(cls: type, frozen: bool, slots: bool) -> type:
    names = list(cls.__dict__.get("__annotations__", {}))
    namespace = {"_MISSING": _MISSING, "_set": object.__setattr__}
    params, body = [], []
    for name in names:
        default = cls.__dict__.get(name, _MISSING)
        if default is _MISSING:
            if any(p.partition("=")[2] for p in params):
                raise TypeError(f"{cls.__name__}: non-default field {name!r} after a "
                                "field with a default")
            params.append(name)
            value = name
        elif isinstance(default, _Factory):
            namespace[f"_f_{name}"] = default.factory
            params.append(f"{name}=_MISSING")
            value = f"_f_{name}() if {name} is _MISSING else {name}"
        else:
            namespace[f"_d_{name}"] = default
            params.append(f"{name}=_d_{name}")
            value = name
        body.append(f"    _set(self, {name!r}, {value})" if frozen
                    else f"    self.{name} = {value}")
    source = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "    pass")
    exec(source, namespace)  # noqa: S102 - generated from the class's own field names
    attrs = {k: v for k, v in cls.__dict__.items()
             if k not in ("__dict__", "__weakref__") and not (slots and k in names)}
    if slots:
        attrs["__slots__"] = tuple(names)
    attrs.update(__init__=namespace["__init__"], __repr__=_repr, __eq__=_eq,
                 __record_fields__=tuple(names), __match_args__=tuple(names))
    attrs["__init__"].__qualname__ = f"{cls.__qualname__}.__init__"
    if frozen:
        attrs.update(__setattr__=_frozen_setattr, __delattr__=_frozen_delattr,
                     __hash__=_hash)
    else:
        attrs["__hash__"] = None  # mutable and compared by value: unhashable, as dataclass
    new = type(cls)(cls.__name__, cls.__bases__, attrs)
    new.__qualname__ = cls.__qualname__
    new.__module__ = cls.__module__
    return new


def is_record(obj: object) -> bool:
    return hasattr(type(obj), "__record_fields__")


def asdict(obj: object) -> dict:
    """Fields as a dict, recursing into records, lists, tuples and dicts (as dataclasses'
    asdict)."""
    return {n: _plain(getattr(obj, n)) for n in obj.__record_fields__}


def _plain(value: object) -> object:
    if is_record(value):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def replace(obj: object, **changes: object) -> object:
    """A copy with some fields changed (as dataclasses.replace)."""
    unknown = set(changes) - set(obj.__record_fields__)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(unknown)}")
    values = {n: getattr(obj, n) for n in obj.__record_fields__}
    values.update(changes)
    return type(obj)(**values)


__all__ = ["FrozenInstanceError", "asdict", "field", "is_record", "record", "replace"]
