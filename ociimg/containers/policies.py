"""A container's restart policy and health check settings (docker's RestartPolicy and
HealthConfig), as CreateOptions takes them and meta.json keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ociimg.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.containers.resolved import ResolvedImage


@dataclass(frozen=True)
class RestartPolicy:
    """docker's --restart: no, on-failure[:N], always, unless-stopped."""
    name: str = "no"
    maximum_retry_count: int = 0

    @classmethod
    def parse(cls, text: str) -> RestartPolicy:
        name, _, count = text.partition(":")
        if name not in ("no", "on-failure", "always", "unless-stopped") or \
                (count and (name != "on-failure" or not count.isdigit())):
            raise InvalidArgument(f"invalid restart policy {text!r}",
                                  hint="use no, on-failure[:N], always or unless-stopped")
        return cls(name, int(count or 0))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "maximumRetryCount": self.maximum_retry_count}


@dataclass(frozen=True)
class Healthcheck:
    """docker's HealthConfig: test (["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]);
    durations in seconds."""
    test: list[str]
    interval: float = 30.0
    timeout: float = 30.0
    start_period: float = 0.0
    retries: int = 3

    def as_dict(self) -> dict[str, Any]:
        return {"test": list(self.test), "interval": self.interval, "timeout": self.timeout,
                "startPeriod": self.start_period, "retries": self.retries}


def healthcheck_record(option: Healthcheck | None, image: ResolvedImage) -> dict[str, Any] | None:
    """The check the monitor runs: --health-* options, else the image's HEALTHCHECK;
    None for none (or test ["NONE"], --no-healthcheck)."""
    if option is not None:
        doc = option.as_dict()
    else:
        hc = image.config.config.get("Healthcheck")
        if not isinstance(hc, dict) or not isinstance(hc.get("Test"), list) or not hc["Test"]:
            return None
        doc = {"test": list(hc["Test"]), "interval": _duration(hc, "Interval", 30),
               "timeout": _duration(hc, "Timeout", 30),
               "startPeriod": _duration(hc, "StartPeriod", 0),
               "retries": _count(hc.get("Retries"), "Retries") or 3}
        if not all(isinstance(word, str) for word in doc["test"]):
            raise _bad_config("Test", doc["test"])
    return None if not doc["test"] or doc["test"][0] == "NONE" else doc


# An image's config is hostile: what the monitor's health thread will compute with is
# checked here (a string made run crash, a huge interval the thread's wait).
_MAX_NS = 10**9 * 86400 * 365  # a year


def _bad_config(field: str, value: Any) -> Exception:
    from ociimg.errors import InvalidDocument
    return InvalidDocument(f"image config: Healthcheck.{field} {value!r} is not valid",
                           hint="the image is malformed; --no-healthcheck runs it without")


def _count(value: Any, field: str, limit: int = 1 << 31) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise _bad_config(field, value)
    return value


def _duration(hc: dict[str, Any], field: str, default: float) -> float:
    """Nanoseconds (docker's Duration) → seconds; 0 or absent: ``default``."""
    return _count(hc.get(field), field, _MAX_NS) / 1e9 or default
