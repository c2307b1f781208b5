"""The values that flow from a host into dbguard: order events, sessions, operations."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field


class OrderKind(str, enum.Enum):
    """What happened to an order, as the host saw it."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        """True when the order can no longer change at the exchange."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderKind.FILLED, OrderKind.CANCELLED, OrderKind.REJECTED, OrderKind.EXPIRED}
)


_KINDS: dict[str, OrderKind] = {kind.value: kind for kind in OrderKind}


def parse_kind(kind: OrderKind | str) -> OrderKind:
    """OrderKind from its value (a dict lookup: this runs for every order event)."""
    try:
        return _KINDS[kind]
    except KeyError:
        names = ", ".join(_KINDS)
        raise ValueError(f"unknown order event kind {kind!r}: expected one of {names}") from None


class Operation(str, enum.Enum):
    """A risky database operation that the guard may veto."""

    RESTORE = "restore"
    REPLACE = "replace"
    MOVE = "move"
    PROFILE_SWITCH = "profile_switch"
    MIGRATE = "migrate"
    VACUUM = "vacuum"
    DELETE = "delete"

    @classmethod
    def parse(cls, text: str | Operation) -> Operation:
        """Accept ``profile_switch``, ``profile-switch`` or the enum itself."""
        if isinstance(text, Operation):
            return text
        try:
            return cls(text.strip().lower().replace("-", "_"))
        except ValueError:
            names = ", ".join(op.value for op in cls)
            raise ValueError(f"unknown operation {text!r}: expected one of {names}") from None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """One step in an order's life.

    ``order_id`` is the host's own id for the order (freqtrade's ``Order.id`` or the
    exchange order id); it only has to be stable for the life of the order.
    """

    order_id: str
    kind: OrderKind
    symbol: str = ""
    side: str = ""
    timestamp: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # Hosts pass ids as ints and kinds as text; store them as the types promise.
        order_id: object = self.order_id
        kind: object = self.kind
        if not isinstance(order_id, str):
            object.__setattr__(self, "order_id", str(order_id))
        if not isinstance(kind, OrderKind):
            object.__setattr__(self, "kind", parse_kind(str(kind)))

    @classmethod
    def of(
        cls,
        order_id: object,
        kind: OrderKind | str,
        symbol: str = "",
        side: str = "",
        timestamp: float | None = None,
    ) -> OrderEvent:
        """Build an event from loosely typed host values (ids as ints, kinds as text)."""
        return cls(
            str(order_id), parse_kind(kind), symbol, side,
            time.time() if timestamp is None else timestamp,
        )


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A trading session: from the host's start to its cleanup."""

    session_id: str
    started_at: float
    host: str = "custom"
    dry_run: bool = False
