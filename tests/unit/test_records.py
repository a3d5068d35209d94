"""ociimg.runtime.records: the @dataclass subset the runtime's records rely on."""

from __future__ import annotations

import pytest

from ociimg.runtime.records import FrozenInstanceError, asdict, field, record, replace


@record(frozen=True, slots=True)
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = ()

    def total(self) -> int:
        return self.x + self.y


@record(slots=True)
class Box:
    name: str
    items: list[int] = field(default_factory=list)
    inner: Point | None = None


def test_init_defaults_factories_and_methods() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags, p.total()) == (1, 0, (), 1)
    assert Point(1, y=2).total() == 3
    a, b = Box("a"), Box("b")
    a.items.append(1)
    assert b.items == []  # a fresh list per instance
    with pytest.raises(TypeError):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, z=2)  # type: ignore[call-arg]


def test_frozen_slots_eq_hash_repr() -> None:
    p = Point(1, 2)
    with pytest.raises(FrozenInstanceError):
        p.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.other = 1  # type: ignore[attr-defined]
    assert p == Point(1, 2) and p != Point(2, 1) and p != (1, 2, ())
    assert hash(p) == hash(Point(1, 2))
    assert repr(p) == "Point(x=1, y=2, tags=())"
    assert not hasattr(Box("a"), "__dict__")
    with pytest.raises(TypeError):
        hash(Box("a"))  # mutable records are unhashable, as dataclasses
    b = Box("a")
    b.name = "c"
    assert b == Box("c")


def test_asdict_and_replace() -> None:
    b = Box("a", [1, 2], Point(3, tags=("t",)))
    assert asdict(b) == {"name": "a", "items": [1, 2],
                         "inner": {"x": 3, "y": 0, "tags": ("t",)}}
    q = replace(Point(1, 2), y=5)
    assert q == Point(1, 5)
    with pytest.raises(TypeError):
        replace(Point(1), nope=1)


def test_default_before_required_is_refused() -> None:
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 0
            b: int


def test_init_argument_errors_are_type_errors() -> None:
    with pytest.raises(TypeError, match="missing required argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 3 positional arguments but 4"):
        Point(1, 2, (), 4)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'z'"):
        Point(1, z=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'x'"):
        Point(1, x=2)  # type: ignore[misc]


def test_frozen_slotted_records_pickle() -> None:
    """process.run_sealed sends the runtime's records to another interpreter."""
    import pickle

    from ociimg.runtime.config import User
    user = User(uid=1, gid=2, additional_gids=(3,))
    assert pickle.loads(pickle.dumps(user)) == user
