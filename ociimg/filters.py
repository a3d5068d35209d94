"""docker's ``--filter KEY=VALUE`` for the listings (images, ps, events): several
values of one key, any matches; different keys, all must."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ociimg.errors import InvalidArgument


def parse_filters(items: Iterable[str], keys: Sequence[str]) -> dict[str, list[str]]:
    """``KEY=VALUE`` items grouped by key; a key not in ``keys`` is an error."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in keys:
            raise InvalidArgument(f"invalid filter {item[:80]!r}",
                                  hint="use KEY=VALUE with KEY one of " + ", ".join(keys))
        out.setdefault(key, []).append(value)
    return out


def label_matches(labels: Mapping[str, str], value: str) -> bool:
    """``label=KEY`` (present) or ``label=KEY=VALUE`` (equal, "" included)."""
    key, eq, want = value.partition("=")
    return key in labels and (not eq or labels[key] == want)


def labels_match(labels: Mapping[str, str], wanted: Iterable[str] | None,
                 unwanted: Iterable[str] | None = None) -> bool:
    """Every ``label=`` filter holds and no ``label!=`` one does (dockerd's rule)."""
    return all(label_matches(labels, v) for v in wanted or ()) and \
        not any(label_matches(labels, v) for v in unwanted or ())
