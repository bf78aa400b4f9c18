"""Helpers for deploy tests: read alert and dashboard queries, find the metric
names a PromQL expression uses, and the names the Metrics catalogue exposes."""
from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD_DIR = ROOT / "deploy" / "grafana" / "dashboards"
DATASOURCE_UID = "v2x-prometheus"
BUILTIN_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
             "bool", "offset", "inf", "nan"}
_GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "5s", "$__range": "5m", "$program": ".*"}


def alert_rules(path: Path = PROMETHEUS_DIR / "alerts.yml") -> list[tuple[str, str]]:
    """(alert name, expr) pairs from an alert file, without a YAML library:
    handles ``expr: <one line>`` and ``expr: |`` block scalars."""
    lines = path.read_text().splitlines()
    rules: list[tuple[str, str]] = []
    name = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*- alert:\s*(\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", "|-", ">", ">-"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                expr = " ".join(part for part in block if part)
                rules.append((name or "?", expr))
                continue
            rules.append((name or "?", rest.strip("'\"")))
        i += 1
    return rules


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """All panels, including those nested in rows."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def panel_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title / refId, expr) for every query target."""
    return [(f"{p['title']} [{t.get('refId')}]", t["expr"])
            for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def variable_queries(dashboard: dict) -> list[str]:
    out = []
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            out.append(query)
    return out


def substitute_variables(expr: str) -> str:
    """Grafana variables -> values Prometheus accepts (the 'All' program)."""
    for variable, value in sorted(_GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise ValueError(f"unknown Grafana variable in {expr!r}")
    return expr


def metric_names(expr: str) -> set[str]:
    """Metric names used in a PromQL expression (or a Grafana
    ``label_values(metric, label)`` variable query)."""
    m = re.fullmatch(r"\s*label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)\s*", expr)
    if m:
        return {m.group(1)}
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)                             # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                            # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def populated_metrics():
    """A Metrics registry with every labelled metric given a child."""
    from tests.deploy.fleet_simulation import EventSimulation
    from aggregator.metrics import Metrics

    metrics = Metrics()
    EventSimulation(metrics).step(1.0)
    return metrics


def catalogue_names() -> set[str]:
    """Every sample name the catalogue exposes (with _total, _bucket, ...)."""
    text = generate_latest(populated_metrics().registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}
