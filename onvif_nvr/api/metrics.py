"""Prometheus text exposition (format 0.0.4) of labelled metric families."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def label_value(value: str) -> str:
    """A label value escaped as the text format wants (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metric_family(
    name: str,
    kind: str,
    samples: Iterable[tuple[Mapping[str, Any], int | float]],
    keys: Sequence[str],
) -> list[str]:
    """``# TYPE`` and one line per sample, labelled with ``keys`` of each sample's labels.
    A family without samples is still declared, so dashboards see it exists."""
    lines = [f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{key}="{label_value(str(labels[key]))}"' for key in keys)
        lines.append(f"{name}{{{text}}} {value}")
    return lines
