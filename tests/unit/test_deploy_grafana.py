"""deploy/grafana/heartbeat-worker.json and docs/operating.md's alerts, checked against the metrics
the code exports: every metric an expression selects must be exported, and every label it matches
or groups by must be one that metric has. The exported set is not a list kept here: it comes from
the prometheus_client metrics registered by worker.runtime.metrics and worker.http.metrics, and from
running the custom collectors (queue gauges, last runs) on fakeredis and a stand-in database.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from pathlib import Path

import fakeredis
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from worker.http import metrics as http_metrics
from worker.runtime import metrics as runtime_metrics
from worker.runtime.broker import make_broker
from worker.runtime.metrics_server import queue_collectors
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "heartbeat-worker.json").read_text())
DATASOURCE = "${datasource}"
#: Samples of each wrapper type. No `_created`: the multiprocess mode of `hbw worker` and
#: `hbw serve --workers N` (PROMETHEUS_MULTIPROC_DIR) does not export it.
SAMPLES = {"counter": {"_total": set()}, "histogram": {"_bucket": {"le"}, "_sum": set(), "_count": set()}}
#: Labels Prometheus gives every scraped series; a metric's own label of that name becomes
#: `exported_<name>` (honor_labels: false, the default).
TARGET_LABELS = {"job", "instance"}


class RedisWithInfo(fakeredis.FakeRedis):
    """fakeredis, answering INFO memory (which it lacks) as a Redis without maxmemory would."""

    def info(self, section=None, *args, **kwargs):
        return {"used_memory": 1_048_576, "maxmemory": 0, "maxmemory_policy": "noeviction"}


class Database:
    """Stands for PostgreSQL: the last finished runs, as db.runs.last_finished reads them."""

    @contextlib.contextmanager
    def connect(self):
        yield self

    def execute(self, query):
        return [("reprocess", "done", 1.7e9), ("backfill", "enqueued", 1.7e9)]


def exported() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Every exported sample name with the labels Prometheus stores it with, and the labels of
    each that Prometheus renames (a metric's own `job` is stored as `exported_job`). A labelled
    counter without series yet has no samples to show its labels: they are read off the metric."""
    samples: dict[str, set[str]] = {}
    registered = {family.name for family in REGISTRY.collect()}
    metrics = [*vars(runtime_metrics).values(), *vars(http_metrics).values()]
    for metric in (m for m in metrics if isinstance(m, MetricWrapperBase)):
        family = metric.describe()[0]
        for suffix, extra in SAMPLES[family.type].items() if family.name in registered else ():
            samples.setdefault(family.name + suffix, set()).update(metric._labelnames, extra)
    settings = Settings(**{"DATABASE_URL": "postgresql://u@127.0.0.1:1/u", "REDIS_URL": "redis://r:1/0"})
    broker = make_broker(settings, client=RedisWithInfo(server=fakeredis.FakeServer()))
    for collector in queue_collectors(broker, 15_000, engine=Database):
        for family in collector.collect():
            for sample in family.samples:
                samples.setdefault(sample.name, set()).update(sample.labels)
    shadowed = {name: labels & TARGET_LABELS for name, labels in samples.items() if labels & TARGET_LABELS}
    for name, labels in samples.items():
        samples[name] = {f"exported_{x}" if x in TARGET_LABELS else x for x in labels} | TARGET_LABELS
    return samples, shadowed


EXPORTED, SHADOWED = exported()

TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)|(?P<matchers>\{[^{}]*\})
    |(?P<range>\[[^\]]*\])|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)
    |(?P<variable>\$\{?\w+\}?)|(?P<name>[a-zA-Z_:][\w:]*)|(?P<open>\()|(?P<close>\))
    |(?P<operator>=~|!~|[=!<>]=|[-+*/%^<>,@])|(?P<bad>.)""",
    re.X,
)
MATCHER = re.compile(r"""\s*([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?""")
GROUPING, MATCHING = {"by", "without"}, {"on", "ignoring", "group_left", "group_right"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "topk"}
AGGREGATIONS |= {"bottomk", "quantile", "limitk", "limit_ratio"}
KEYWORDS = {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"} | GROUPING | MATCHING
FUNCTIONS = """abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time
    day_of_month day_of_week day_of_year days_in_month delta deriv exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum idelta increase
    irate label_join label_replace last_over_time ln log10 log2 max_over_time min_over_time minute month
    predict_linear present_over_time quantile_over_time rate resets round scalar sgn sort sort_desc sqrt
    stddev_over_time stdvar_over_time sum_over_time time timestamp vector year"""
CALLS = set(re.findall(r"\w+", FUNCTIONS)) | AGGREGATIONS


def parse(expr: str, problems: list[str]) -> list:
    """PromQL as nested lists, one per pair of parentheses, of (kind, text) tokens."""
    stack: list[list] = [[]]
    for match in TOKEN.finditer(expr):
        kind, text = match.lastgroup, match.group()
        if kind == "bad" or (kind == "close" and len(stack) == 1):
            problems.append(f"cannot read {text!r} at {match.start()}")
        elif kind == "open":
            stack.append([])
        elif kind == "close":
            stack[-2].append(stack.pop())
        elif kind != "space":
            stack[-1].append((kind, text))
    if len(stack) > 1:
        problems.append("a parenthesis is not closed")
    return stack[0]


def label_list(group: list) -> list[str]:
    return [text for kind, text in group if kind == "name"]


def labels_follow(group: list, i: int) -> bool:
    """Whether group[i] is by, without, on... and group[i + 1] the labels it names."""
    after = group[i + 1] if i + 1 < len(group) else None
    return isinstance(group[i], tuple) and group[i][1] in GROUPING | MATCHING and isinstance(after, list)


def groupings(group: list):
    """Every by/without label list in a tree: (by or without, labels)."""
    for i, item in enumerate(group):
        if isinstance(item, list):
            yield from groupings(item)
        elif labels_follow(group, i) and item[1] in GROUPING:
            yield item[1], label_list(group[i + 1])


def check_label(metric: str, label: str, problems: list[str]) -> None:
    if metric in EXPORTED and label not in EXPORTED[metric]:
        problems.append(f"{metric} has no label {label}")
    elif label in SHADOWED.get(metric, ()):
        problems.append(f"{metric}'s own {label} label is exported_{label} in Prometheus")


def scan(group: list, problems: list[str]) -> list[str]:
    """The metrics a group selects (checking each, and the labels grouped by on the way)."""
    lists = {i + 1 for i in range(len(group) - 1) if labels_follow(group, i)}
    inner = {i: scan(g, problems) for i, g in enumerate(group) if isinstance(g, list) and i not in lists}
    metrics = [metric for found in inner.values() for metric in found]
    for i, item in enumerate(group):
        after = group[i + 1] if i + 1 < len(group) else None
        if isinstance(item, list):
            continue
        kind, text = item
        if i + 1 in lists:
            arg = inner.get(i - 1 if i and isinstance(group[i - 1], list) else i + 2, [])
            for metric in arg if text in GROUPING else []:
                for label in label_list(after):
                    check_label(metric, label, problems)
        elif kind == "name" and isinstance(after, list):
            if text not in CALLS:
                problems.append(f"{text} is no PromQL function")
            if text == "histogram_quantile":
                if not inner[i + 1] or any(not m.endswith("_bucket") for m in inner[i + 1]):
                    problems.append(f"histogram_quantile of {inner[i + 1]}, not of buckets")
                for how, labels in groupings(after):
                    if (how == "by") != ("le" in labels):
                        problems.append(f"histogram_quantile: {how} ({', '.join(labels)}) loses le")
        elif kind == "name" and text not in KEYWORDS | AGGREGATIONS:
            metrics.append(text)
            if text not in EXPORTED:
                problems.append(f"{text} is not exported")
            matchers = after[1][1:-1] if isinstance(after, tuple) and after[0] == "matchers" else ""
            if MATCHER.sub("", matchers).strip():
                problems.append(f"cannot read the matchers of {text}: {matchers}")
            for label in MATCHER.findall(matchers):
                check_label(text, label, problems)
        elif kind == "matchers" and not (i and isinstance(group[i - 1], tuple) and group[i - 1][0] == "name"):
            problems.append(f"{text}: name the metric before its matchers")
    return metrics


def expr_problems(expr: str) -> list[str]:
    problems: list[str] = []
    scan(parse(expr, problems), problems)
    return problems


def dashboard_problems(dashboard: dict) -> list[str]:
    """Unique ids, the ${datasource} variable everywhere, a place on the grid, and sound queries."""
    found, ids, cells = [], set(), set()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    if (variables.get("datasource") or {}).get("query") != "prometheus":
        found.append("no Prometheus datasource variable named datasource")
    for panel in dashboard["panels"]:
        where = f"panel {panel.get('id')} ({panel.get('title')})"
        found += [f"{where}: id is not unique"] if panel.get("id") in ids else []
        ids.add(panel.get("id"))
        for source in [panel, *panel.get("targets", [])]:
            if (source.get("datasource") or {}).get("uid") != DATASOURCE:
                found.append(f"{where}: datasource is not {DATASOURCE}")
        grid = panel.get("gridPos", {})
        if not {"h", "w", "x", "y"} <= grid.keys() or grid["x"] + grid["w"] > 24:
            found.append(f"{where}: gridPos {grid}")
            continue
        xs, ys = range(grid["x"], grid["x"] + grid["w"]), range(grid["y"], grid["y"] + grid["h"])
        mine = {(x, y) for x in xs for y in ys}
        found += [f"{where}: overlaps another panel"] if mine & cells else []
        cells |= mine
        if panel["type"] != "row" and not panel.get("targets"):
            found.append(f"{where}: no query")
        for target in panel.get("targets", []):
            found += [f"{where} {target['refId']}: {p}" for p in expr_problems(target["expr"])]
    return found


def documented_alerts() -> list[dict]:
    """The rules of the yaml block under "A starting set of alerts" in docs/operating.md."""
    text = (ROOT / "docs" / "operating.md").read_text()
    block = re.search(r"A starting set of alerts.*?```yaml\n(.*?)```", text, re.S)
    assert block, "docs/operating.md has no alerts block"
    return [rule for group in yaml.safe_load(block.group(1))["groups"] for rule in group["rules"]]


def test_the_exported_metrics_are_found():
    """What the checker knows comes from all three sources: counters, histograms, collectors."""
    assert {"dramatiq_messages_total", "hbw_queue_ready"} <= EXPORTED.keys()
    assert {"le", "route", "instance"} <= EXPORTED["hbw_http_request_duration_seconds_bucket"]
    assert {"kind", "status"} <= EXPORTED["hbw_run_last_finished_timestamp_seconds"]
    assert EXPORTED["hbw_redis_memory_used_bytes"] == TARGET_LABELS


def test_the_dashboard_is_sound():
    assert DASHBOARD["schemaVersion"] >= 39
    assert dashboard_problems(DASHBOARD) == []


@pytest.mark.parametrize("rule", documented_alerts(), ids=lambda rule: rule["alert"])
def test_every_documented_alert_queries_exported_metrics(rule):
    assert expr_problems(rule["expr"]) == []


@pytest.mark.parametrize(
    "expr",
    [
        'max(hbw_workers{state="alive"}) == 0 or max(hbw_redis_up) == 0',
        "sum without (instance) (rate(dramatiq_messages_total[5m] offset 1h)) > bool 0",
        "topk(3, sum by (route, method) (rate(hbw_http_requests_total[$__rate_interval])))",
        "histogram_quantile(0.5, sum(rate(hbw_http_group_heartbeats_bucket[1h])) by (le))",
        "sum by (derived_job) (rate(hbw_updated_users_total[5m])) / on (instance) group_left max(hbw_redis_up)",
    ],
)
def test_the_checker_takes_sound_promql(expr):
    assert expr_problems(expr) == []


@pytest.mark.parametrize(
    ("expr", "reported"),
    [
        ("sum(rate(hbw_heartbeat_total[5m]))", "hbw_heartbeat_total is not exported"),
        ("rate(dramatiq_messages_created[5m])", "dramatiq_messages_created is not exported"),
        ('max(hbw_queue_ready{queue="heartbeats"})', "hbw_queue_ready has no label queue"),
        ("max by (queue) (hbw_queue_lag_seconds)", "hbw_queue_lag_seconds has no label queue"),
        ("sum(rate(hbw_heartbeats_total[5m])) by (outcomes)", "has no label outcomes"),
        ("histogram_quantile(0.9, sum by (route) (rate(hbw_http_group_requests_bucket[5m])))", "loses le"),
        ("histogram_quantile(0.9, rate(hbw_http_request_duration_seconds_sum[5m]))", "not of buckets"),
        ("sum by (exported_job) (rate(hbw_derived_duration_seconds_count[5m]))", "has no label exported_job"),
        ('{__name__="hbw_queue_ready"}', "name the metric"),
        ('hbw_queue_ready{queue_name=~"heart.*",}', None),
        ("sum(rate(hbw_http_requests_total[5m])", "not closed"),
        ("hbw_queue_ready ? 1", "cannot read '?'"),
        ("histogram_quantil(0.9, sum by (le) (rate(hbw_http_group_requests_bucket[5m])))", "no PromQL"),
    ],
)
def test_the_checker_reports_what_it_is_for(expr, reported):
    problems = expr_problems(expr)
    assert any(reported in p for p in problems) if reported else problems == [], problems


@pytest.mark.parametrize(
    ("change", "reported"),
    [
        (lambda d: d["panels"][1]["targets"][0].update(expr="hbw_http_request_total"), "not exported"),
        (lambda d: d["panels"][2].update(id=1), "id is not unique"),
        (lambda d: d["panels"][2]["datasource"].update(uid="prometheus"), "datasource is not"),
        (lambda d: d["panels"][2]["gridPos"].update(x=20), "gridPos"),
        (lambda d: d["panels"][3]["gridPos"].update(x=0), "overlaps"),
        (lambda d: d["templating"].update(list=[]), "no Prometheus datasource variable"),
    ],
)
def test_the_dashboard_check_reports_what_it_is_for(change, reported):
    dashboard = copy.deepcopy(DASHBOARD)
    change(dashboard)
    assert any(reported in p for p in dashboard_problems(dashboard)), dashboard_problems(dashboard)
