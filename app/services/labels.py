"""Short, stable labels for processes and network settings (sweep tables, plots, comparisons)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.contract import SLSpec, VESpec, VPCosineSpec, VPSpec

_DEFAULTS: dict[str, dict[str, Any]] = {
    spec().kind: spec().model_dump() for spec in (VPSpec, SLSpec, VPCosineSpec, VESpec)
}


def _value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else json.dumps(v, separators=(",", ":"))


def process_label(spec: Mapping[str, Any]) -> str:
    """The kind, with the parameters that differ from the kind's defaults: `vp`, `vp(kappa=0.1)`,
    `sl(sigma0=0.2)`."""
    kind = str(spec.get("kind", "?"))
    defaults = _DEFAULTS.get(kind, {})
    changed = [f"{k}={_value(v)}" for k, v in spec.items()
               if k != "kind" and defaults.get(k) != v]
    return f"{kind}({', '.join(changed)})" if changed else kind


def network_label(overrides: Mapping[str, Any]) -> str:
    """A network axis entry as `key=value` pairs (`width=64, hidden_widths=[64,32]`), or
    `default` when it changes nothing."""
    items = [f"{k}={_value(v)}" for k, v in overrides.items() if v is not None]
    return ", ".join(items) if items else "default"
