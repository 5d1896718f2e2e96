"""metav1.Condition-shaped conditions (pure).

Kopf writes status with JSON merge patches, which replace lists whole: callers always write the
complete list these functions return.
"""

from __future__ import annotations

from typing import Any

Condition = dict[str, Any]


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None = None,
) -> list[Condition]:
    """Return a new list with `type_` set; lastTransitionTime moves only when the status flips."""
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    previous = find_condition(conditions, type_)
    changed = previous is None or previous.get("status") != status_text
    condition: Condition = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed else previous.get("lastTransitionTime", now),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    # In place: a condition keeps its position, so setting the same conditions in another order (another
    # code path) leaves the list equal and costs no status write.
    if previous is None:
        return [*conditions, condition]
    return [condition if c.get("type") == type_ else c for c in conditions]


def find_condition(conditions: list[Condition] | None, type_: str) -> Condition | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return condition
    return None


def is_true(conditions: list[Condition] | None, type_: str) -> bool:
    condition = find_condition(conditions, type_)
    return condition is not None and condition.get("status") == "True"
