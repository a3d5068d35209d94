"""``@record``: the subset of ``@dataclass`` the runtime's records use, at a fraction of
its start-up cost.

``import dataclasses`` loads inspect (with ast, dis, tokenize, linecache) and each
decorated class execs five or six generated methods, at every ``ociimg-runtime`` start
for the runtime's eighteen records. ``record`` compiles nothing: one
generic ``__init__`` per class and one shared ``__repr__``/``__eq__``/``__hash__``/
``__setattr__`` implementation. Supported: annotated fields with defaults or
``field(default_factory=)``, ``frozen`` (attribute assignment raises FrozenInstanceError),
``slots``; ``asdict()`` and ``replace()`` behave like dataclasses'. Not supported:
inheritance between records, ``ClassVar``/``InitVar``, ``__post_init__``, ordering."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
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


def _reduce(self: object) -> tuple:
    # Pickled by value through __init__ (process.run_sealed sends records to a new
    # interpreter): the default protocol would set slots one by one, which frozen refuses.
    return (type(self), _values(self))


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
    defaults: dict[str, object] = {}
    factories: dict[str, Callable[[], object]] = {}
    for name in names:
        default = cls.__dict__.get(name, _MISSING)
        if isinstance(default, _Factory):
            factories[name] = default.factory
        elif default is not _MISSING:
            defaults[name] = default
        elif defaults or factories:
            raise TypeError(f"{cls.__name__}: non-default field {name!r} after a field "
                            "with a default")
    attrs = {k: v for k, v in cls.__dict__.items()
             if k not in ("__dict__", "__weakref__") and not (slots and k in names)}
    if slots:
        attrs["__slots__"] = tuple(names)
    init = _make_init(cls.__qualname__, tuple(names), defaults, factories)
    attrs.update(__init__=init, __repr__=_repr, __eq__=_eq, __reduce__=_reduce,
                 __record_fields__=tuple(names), __match_args__=tuple(names))
    if frozen:
        attrs.update(__setattr__=_frozen_setattr, __delattr__=_frozen_delattr,
                     __hash__=_hash)
    else:
        attrs["__hash__"] = None  # mutable and compared by value: unhashable, as dataclass
    new = type(cls)(cls.__name__, cls.__bases__, attrs)
    new.__qualname__ = cls.__qualname__
    new.__module__ = cls.__module__
    return new


def _make_init(qualname: str, names: tuple[str, ...], defaults: dict[str, object],
               factories: dict[str, Callable[[], object]]) -> Callable[..., None]:
    """One generic ``__init__`` per record: no source generated and compiled for each (as
    dataclasses do) at every runtime start."""
    set_field = object.__setattr__

    def __init__(self: object, *args: object, **kwargs: object) -> None:  # noqa: N807
        if len(args) > len(names):
            raise TypeError(f"{qualname}() takes {len(names)} positional arguments but "
                            f"{len(args)} were given")
        values = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{qualname}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{qualname}() got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            if name in values:
                value = values[name]
            elif name in defaults:
                value = defaults[name]
            elif name in factories:
                value = factories[name]()
            else:
                raise TypeError(f"{qualname}() missing required argument {name!r}")
            set_field(self, name, value)

    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


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
