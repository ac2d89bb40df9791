"""Which fault a request gets: :class:`Rule` (one fault and the requests it applies to) and
:class:`FaultPlan` (the rules in priority order, then seeded random faults)."""

from __future__ import annotations

import dataclasses
import random
import re
import threading
from collections.abc import Sequence
from typing import Any

from .records import RequestRecord

#: Fault names a rule may apply. ``pass`` forwards untouched (useful to shield requests from
#: later rules or from random faults).
FAULTS = ("reset", "status", "expired", "stall", "throttle", "truncate", "flip", "pass")

#: Default fault names drawn in random mode: all of them are retryable by a correct client and
#: none corrupts data silently (``flip``) or waits long (``stall``); opt into those explicitly.
DEFAULT_RANDOM_FAULTS = ("reset", "status", "truncate")

#: The phases a fault may act in, for the faults that have a choice.
_PHASES = {
    "reset": ("request", "headers", "response"),
    "stall": ("request", "headers", "response"),
}


@dataclasses.dataclass
class Rule:
    """One fault and the requests it applies to.

    Matching: ``method`` (case-insensitive, None = any) and ``url`` (a regex *searched* in the full
    absolute URL, query included, None = any). Every rule counts the requests it matches, whether
    or not it applied its fault, so "the 2nd PUT of part 3" means the same thing whatever other
    rules do. The rule is *active* for the n-th matching request when ``nth`` is None or n == nth,
    and ``first`` is None or n <= first. The first active rule in list order wins; random mode
    only considers requests that no active rule took.

    Fault parameters (the ones a fault does not use are ignored):

    * ``reset``: read ``after_bytes`` of the request body (``phase="request"``, the default), or
      forward the request, get the origin's answer and send nothing (``phase="headers"``: the
      origin acted but the client cannot know), or forward the response headers and
      ``after_bytes`` of its body (``phase="response"``); then close with RST (SO_LINGER 0).
    * ``status``: answer ``status`` (500, 503, 429, 408, ...) with an S3-style XML error body and
      an optional ``Retry-After`` header, after draining the request body; the origin is never
      contacted.
    * ``expired``: answer 403 ``AccessDenied`` / ``Request has expired`` like S3 does for a
      presigned URL past its expiry; the origin is never contacted.
    * ``stall``: stop for ``seconds``: while reading the request body after ``after_bytes``
      (``phase="request"``), before sending the response headers (``phase="headers"``), or after
      the headers and ``after_bytes`` of the response body (``phase="response"``, the default).
      Then ``then="continue"`` (default) or ``then="close"`` (FIN, so the body ends short).
    * ``throttle``: limit both bodies of this request to ``bps`` bytes per second.
    * ``truncate``: forward the response headers (original Content-Length) and only ``nbytes``
      of the body, then close (FIN).
    * ``flip``: XOR the response body byte at ``offset`` (None = random within Content-Length, or
      the first 64 KiB if unknown) with ``mask``.
    * ``pass``: forward unchanged.

    ``at_fraction`` (0.0-1.0), when set and the response has a Content-Length, places a
    response-side fault (truncate, reset/stall in the response phase) at that fraction of the
    body instead of at ``nbytes``/``after_bytes``; random mode uses it because it must pick a
    cut point before it knows the response size.
    """

    fault: str
    method: str | None = None
    url: str | None = None
    nth: int | None = None
    first: int | None = None
    phase: str | None = None
    after_bytes: int = 0
    status: int = 500
    retry_after: int | str | None = None
    seconds: float = 10.0
    then: str = "continue"
    bps: int = 1_000_000
    nbytes: int = 0
    offset: int | None = None
    mask: int = 0xFF
    at_fraction: float | None = None
    matched: int = dataclasses.field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        check_fault_name(self.fault)
        if self.phase is None:
            self.phase = "request" if self.fault == "reset" else "response"
        elif self.phase not in _PHASES.get(self.fault, (self.phase,)):
            raise ValueError(f"phase {self.phase!r} is not valid for fault {self.fault!r}")
        if self.then not in ("continue", "close"):
            raise ValueError("then must be 'continue' or 'close'")
        if self.bps <= 0:
            raise ValueError("bps must be positive")
        if self.at_fraction is not None and not 0.0 <= self.at_fraction <= 1.0:
            raise ValueError("at_fraction must be between 0 and 1")
        self._url_re = re.compile(self.url) if self.url else None

    @classmethod
    def parse(cls, spec: str) -> Rule:
        """Build a rule from ``key=value`` words, e.g. ``"fault=reset method=PUT nth=2"``.

        Why a text form: benchmarks and the CLI pass rules through argv or environment variables.
        The value is everything after the first ``=``, so ``url=partNumber=2`` works; regexes
        must not contain spaces. A bare first word is the fault: ``"status status=503"``.
        """
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        kwargs: dict[str, Any] = {}
        for i, word in enumerate(spec.split()):
            if "=" not in word:
                if i == 0:
                    kwargs["fault"] = word
                    continue
                raise ValueError(f"rule word {word!r} is not key=value")
            key, value = word.split("=", 1)
            key = key.replace("-", "_")
            if key not in fields:
                raise ValueError(f"unknown rule key {key!r}")
            kwargs[key] = _parse_value(key, value)
        if "fault" not in kwargs:
            raise ValueError(f"rule {spec!r} names no fault")
        return cls(**kwargs)

    def matches(self, method: str, url: str) -> bool:
        """True if the request is one this rule counts (ignores nth/first)."""
        if self.method and self.method.upper() != method.upper():
            return False
        return not (self._url_re and not self._url_re.search(url))

    def active_for(self, n: int) -> bool:
        """True if the rule applies to its n-th matching request (1-based)."""
        if self.nth is not None and n != self.nth:
            return False
        return not (self.first is not None and n > self.first)

    def label(self) -> str:
        """Short description stored in the request log, e.g. ``status:503`` or ``reset@request``."""
        if self.fault == "status":
            return f"status:{self.status}"
        if self.fault in ("reset", "stall"):
            return f"{self.fault}@{self.phase}"
        return self.fault


def _parse_value(key: str, value: str) -> Any:
    """The value of ``key=value`` in a rule's text form, typed as the field wants it."""
    if key in ("nth", "first", "after_bytes", "status", "bps", "nbytes"):
        return int(value)
    if key == "offset":
        return None if value.lower() == "random" else int(value)
    if key == "mask":
        return int(value, 0)
    if key in ("seconds", "at_fraction"):
        return float(value)
    if key == "retry_after":
        return int(value) if value.isdigit() else value
    return value


def check_fault_name(name: str) -> str:
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; expected one of {FAULTS}")
    return name


def random_rule(name: str, rng: random.Random, rec: RequestRecord) -> Rule:
    """A rule for fault ``name`` with parameters drawn from ``rng`` (so reproducible)."""
    body = rec.request_content_length or 0
    if name == "reset":
        phase = rng.choice(("request", "headers", "response") if body else ("headers", "response"))
        after = rng.randrange(body) if phase == "request" and body else rng.randrange(65536)
        return Rule("reset", phase=phase, after_bytes=after, at_fraction=rng.random())
    if name == "status":
        status = rng.choice((500, 503, 503, 429, 408))
        retry_after = rng.choice((None, 0, 1)) if status in (503, 429) else None
        return Rule("status", status=status, retry_after=retry_after)
    if name == "stall":
        return Rule(
            "stall",
            seconds=rng.uniform(1.0, 5.0),
            after_bytes=rng.randrange(65536),
            at_fraction=rng.random(),
        )
    if name == "throttle":
        return Rule("throttle", bps=rng.choice((256 * 1024, 1024 * 1024, 4 * 1024 * 1024)))
    if name == "truncate":
        return Rule("truncate", nbytes=rng.randrange(65536), at_fraction=rng.random())
    return Rule(name)


class FaultPlan:
    """The rules in priority order, then random mode; thread-safe.

    Random decisions depend on the seed, the request's stable key (:func:`request_key`) and how
    often that key was seen, not on thread timing, so the same requests get the same faults on
    every run (see :class:`~tests.helpers.faultproxy.FaultProxy` for the parameters).
    """

    def __init__(
        self,
        rules: Sequence[Rule | str],
        random_rate: float,
        seed: int | None,
        random_faults: Sequence[str | Rule],
        max_faults_per_key: int,
    ) -> None:
        self.random_rate = random_rate
        self.seed: int = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.random_faults: list[str | Rule] = [
            f if isinstance(f, Rule) else check_fault_name(f) for f in random_faults
        ]
        self.max_faults_per_key = max_faults_per_key
        self._lock = threading.Lock()
        self._rules: list[Rule] = [as_rule(r) for r in rules]
        self._key_seen: dict[str, int] = {}
        self._key_faults: dict[str, int] = {}

    def add_rule(self, rule: Rule | str) -> Rule:
        rule = as_rule(rule)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def forget_history(self) -> None:
        """Forget how often each key was seen and faulted (rule counters are kept)."""
        with self._lock:
            self._key_seen.clear()
            self._key_faults.clear()

    def choose(self, rec: RequestRecord) -> tuple[Rule | None, random.Random]:
        """The rule to apply (or None) and an RNG for its random parameters.

        Rules first; then random mode. The RNG is seeded from (seed, request key, times the key
        was seen) so decisions do not depend on which thread got the lock first.
        """
        with self._lock:
            chosen = self._count_rules(rec)
            key = rec.key
            seen = self._key_seen.get(key, 0)
            self._key_seen[key] = seen + 1
            rng = random.Random(f"{self.seed}\0{key}\0{seen}")
            if chosen is not None:
                return chosen, rng
            return self._random_fault(rec, key, rng), rng

    def _count_rules(self, rec: RequestRecord) -> Rule | None:
        """Count the request on every rule that matches it; the first active one wins."""
        chosen: Rule | None = None
        for rule in self._rules:
            if rule.matches(rec.method, rec.url):
                rule.matched += 1
                if chosen is None and rule.active_for(rule.matched):
                    chosen = rule
        return chosen

    def _random_fault(self, rec: RequestRecord, key: str, rng: random.Random) -> Rule | None:
        if self.random_rate <= 0 or self._key_faults.get(key, 0) >= self.max_faults_per_key:
            return None
        if rng.random() >= self.random_rate:
            return None
        candidates = [
            f
            for f in self.random_faults
            if not isinstance(f, Rule) or f.matches(rec.method, rec.url)
        ]
        if not candidates:
            return None
        pick = rng.choice(candidates)
        rule = pick if isinstance(pick, Rule) else random_rule(pick, rng, rec)
        self._key_faults[key] = self._key_faults.get(key, 0) + 1
        return rule


def as_rule(rule: Rule | str) -> Rule:
    """``rule``, or the rule its text form describes (:meth:`Rule.parse`)."""
    return rule if isinstance(rule, Rule) else Rule.parse(rule)
