"""The guard's answer: allowed or not, with every reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbguard_plugin.events import Operation


@dataclass(frozen=True)
class Reason:
    """One reason to refuse an operation."""

    #: orders-in-flight, operation-in-progress, lease-held, session-active, plugin,
    #: hard-linked or journal-unreadable (docs/lifecycle "Veto rules").
    code: str
    message: str
    #: False for reasons ``force`` can never override (orders in flight, a held lease).
    overridable: bool
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "overridable": self.overridable,
            **({"details": self.details} if self.details else {}),
        }


@dataclass(frozen=True)
class Verdict:
    """Whether *operation* may run now, and why not."""

    operation: Operation
    reasons: tuple[Reason, ...] = ()
    warnings: tuple[str, ...] = ()
    #: True when vetoes were overridden with ``force`` (and written to the audit log).
    forced: bool = False

    @property
    def allowed(self) -> bool:
        return not self.reasons or self.forced

    @property
    def overridable(self) -> bool:
        return all(reason.overridable for reason in self.reasons)

    def summary(self) -> str:
        if not self.reasons:
            return f"{self.operation.value}: allowed"
        head = "allowed by force" if self.forced else "vetoed"
        lines = [f"{self.operation.value}: {head}"]
        lines += [f"  - {reason.message}" for reason in self.reasons]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation.value,
            "allowed": self.allowed,
            "forced": self.forced,
            "reasons": [reason.as_dict() for reason in self.reasons],
            "warnings": list(self.warnings),
        }
