"""Filter of the day-2 playbooks: the fleet's queue report (queue.yml)."""

from __future__ import annotations

from collections import Counter


def queue_fleet(reports: list[dict]) -> list[str]:
    """Lines: the relays' messages by queue, the oldest message, the reasons summed."""
    queues: Counter = Counter()
    reasons: Counter = Counter()
    for report in reports:
        queues.update(report["queues"])
        reasons.update({r["reason"]: r["count"] for r in report["reasons"]})
    oldest = max((r["oldest"]["age_seconds"] for r in reports if r["oldest"]), default=None)
    lines = [f"fleet of {len(reports)} relays: {sum(r['total'] for r in reports)} messages: "
             + ", ".join(f"{name} {count}" for name, count in queues.items())]
    if oldest is not None:
        lines.append(f"oldest: {oldest // 60} min {oldest % 60} s old")
    lines += [f"{count}: {reason}" for reason, count in reasons.most_common()]
    return lines


class FilterModule:
    def filters(self) -> dict:
        return {"queue_fleet": queue_fleet}
