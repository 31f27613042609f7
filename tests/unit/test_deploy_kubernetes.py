"""deploy/kubernetes/, checked offline: every document against the Kubernetes schemas bundled in
kubernetes-validate or the KEDA CRDs vendored in deploy/kubernetes/schemas/, strictly (an unknown
field fails, as with `kubectl apply`), then what no schema sees: references, ports, `hbw` command
lines (the real parser), variables (the real settings), KEDA's list (where the broker enqueues).
Each check returns its problems, so a test can break a copy of the manifests and see it reported."""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import re
import urllib.parse
from pathlib import Path

import fakeredis
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from pydantic import AliasChoices

from worker.cli import build_parser
from worker.errors import ConfigError, check_urls
from worker.runtime.broker import make_broker
from worker.runtime.messages import HEARTBEATS_QUEUE, store_message
from worker.runtime.redis_keys import Keys
from worker.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
FILES = sorted(p for p in DEPLOY.rglob("*.yaml") if "schemas" not in p.relative_to(DEPLOY).parts)
DOCS = [(p.relative_to(DEPLOY), d) for p in FILES for d in yaml.safe_load_all(p.read_text()) if d]
#: The oldest Kubernetes the manifests are for (CronJob's timeZone is GA since 1.27), and the newest.
VERSIONS = ("1.29", latest_version())
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")
OPEN_ENDED = {"additionalProperties", "x-kubernetes-preserve-unknown-fields"}


def strict(schema):
    """A CRD schema as strict field validation applies it: no undeclared properties, unless allowed."""
    if isinstance(schema, dict) and "properties" in schema and not schema.keys() & OPEN_ENDED:
        schema["additionalProperties"] = False
    for value in schema.values() if isinstance(schema, dict) else schema if isinstance(schema, list) else ():
        strict(value)
    return schema


CRDS = {  # (apiVersion, kind): its schema
    (f"{c['spec']['group']}/{v['name']}", c["spec"]["names"]["kind"]): strict(v["schema"]["openAPIV3Schema"])
    for path in sorted((DEPLOY / "schemas").glob("*.yaml"))
    for c in yaml.safe_load_all(path.read_text())
    for v in c["spec"]["versions"]
}


def schema_problems(doc: dict) -> list[str]:
    """Where the document breaks its kind's schema, at every Kubernetes version of VERSIONS."""
    if (crd := CRDS.get((doc.get("apiVersion"), doc.get("kind")))) is not None:
        errors = jsonschema.Draft202012Validator(crd).iter_errors(doc)
        found = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]
        # The API server checks a custom object's metadata as any object's: as a ConfigMap's.
        return found + schema_problems({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})
    found = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            found.append(f"{version}: {'.'.join(map(str, e.path))}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            found.append(f"{version}: {e.message}")
    return found


def find(docs, kind: str, name: str | None = None) -> list[dict]:
    return [d for _, d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]


def pod_spec(doc: dict) -> dict:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]["spec"]


def containers(docs) -> list[tuple[dict, dict]]:
    pods = [d for kind in ("Deployment", "Job", "CronJob") for d in find(docs, kind)]
    return [(doc, container) for doc in pods for container in pod_spec(doc)["containers"]]


def ports_of(container: dict) -> set:
    return {port.get(key) for port in container.get("ports", []) for key in ("name", "containerPort")}


def setting_names() -> set[str]:
    """The environment variables Settings reads: aliases as they are, every other field prefixed."""
    prefix, names = Settings.model_config["env_prefix"], set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias or f"{prefix}{name}".upper()]
        names |= {choice for choice in choices if isinstance(choice, str)}
    return names


def data(docs, kind: str, name: str) -> dict:
    return next(({**d.get("data", {}), **d.get("stringData", {})} for d in find(docs, kind, name)), {})


def container_env(docs, container: dict) -> dict[str, str | None]:
    """The container's environment, from our ConfigMaps and Secrets (None: a key they lack)."""
    env = {}
    for source in container.get("envFrom", []):
        for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
            env |= data(docs, kind, source[key]["name"]) if key in source else {}
    for var in container.get("env", []):
        env[var["name"]] = var.get("value")
        for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
            if ref := var.get("valueFrom", {}).get(key):
                env[var["name"]] = data(docs, kind, ref["name"]).get(ref["key"])
    return env


def container_settings(docs, container: dict) -> Settings:
    """The settings `hbw` reads in that container, with only its environment."""
    with pytest.MonkeyPatch.context() as env:
        for name in setting_names():
            env.delenv(name, raising=False)
        for name, value in container_env(docs, container).items():
            if value is not None:
                env.setenv(name, value)
        return Settings()


def reference_problems(docs) -> list[str]:
    """ScaledObjects scale a Deployment of ours, with a TriggerAuthentication of ours; Services and
    PodDisruptionBudgets select pods of ours, Services a port of theirs; probes a port of their own."""
    found, pods = [], [d["spec"]["template"] for d in find(docs, "Deployment")]
    for doc in find(docs, "ScaledObject"):
        target = doc["spec"]["scaleTargetRef"]
        if target.get("kind", "Deployment") != "Deployment" or not find(docs, "Deployment", target["name"]):
            found.append(f"ScaledObject {doc['metadata']['name']}: no Deployment {target['name']}")
        refs = [t["authenticationRef"]["name"] for t in doc["spec"]["triggers"] if "authenticationRef" in t]
        found += [f"no TriggerAuthentication {a}" for a in refs if not find(docs, "TriggerAuthentication", a)]
    for doc in find(docs, "Service") + find(docs, "PodDisruptionBudget"):
        selector = doc["spec"]["selector"].get("matchLabels", doc["spec"]["selector"])
        selected = [pod for pod in pods if selector.items() <= pod["metadata"]["labels"].items()]
        found += [] if selected else [f"{doc['kind']} {doc['metadata']['name']}: selects no pods"]
        ports = set().union(*(ports_of(c) for pod in selected for c in pod["spec"]["containers"]))
        for port in (p["targetPort"] for p in doc["spec"].get("ports", []) if p["targetPort"] not in ports):
            found.append(f"{doc['kind']} {doc['metadata']['name']}: no container port {port}")
    for doc, container in containers(docs):
        for probe, action in itertools.product(PROBES, ("httpGet", "tcpSocket", "grpc")):
            port = container.get(probe, {}).get(action, {}).get("port")
            if port is not None and port not in ports_of(container):
                found.append(f"{doc['metadata']['name']}/{container['name']} {probe}: no port {port}")
    return found


def command_lines(docs) -> list[list[str]]:
    lines = []
    for _, container in containers(docs):
        lines.append(container.get("command", []) + container.get("args", []))
        lines += [container.get(probe, {}).get("exec", {}).get("command", []) for probe in PROBES]
    return [line for line in lines if line[:1] == ["hbw"]]


def command_problems(docs) -> list[str]:
    """Every `hbw` command line parses with the CLI's own parser, its options spelt out as in its
    --help (argparse also takes abbreviations, which a new option can make ambiguous)."""
    found = []
    for line in command_lines(docs):
        try:
            build_parser().parse_args(line[1:])
        except SystemExit:
            found.append(f"`{' '.join(line)}` does not parse")
            continue
        words = list(itertools.takewhile(lambda word: not word.startswith("-"), line[1:]))
        with contextlib.redirect_stdout(io.StringIO()) as help_text, contextlib.suppress(SystemExit):
            build_parser().parse_args([*words, "--help"])
        for option in (word.split("=")[0] for word in line if word.startswith("--")):
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text.getvalue()):
                found.append(f"`{' '.join(line)}`: {option} is not spelt out")
    return found


def env_problems(docs) -> list[str]:
    """Every variable a container gets (ConfigMaps included) is a setting, its value valid, the URLs
    set; a Deployment's grace period outlasts its graceful shutdown (docs/reliability.md)."""
    found, names = [], setting_names()
    for doc, container in containers(docs):
        env = container_env(docs, container)
        found += [f"{container['name']}: {name} is no setting" for name in sorted(env.keys() - names)]
        found += [f"{container['name']}: {name} has no value here" for name, v in env.items() if v is None]
        try:
            settings = container_settings(docs, container)
            check_urls(settings.database_url, settings.redis_url)
        except (ValueError, ConfigError) as e:
            found.append(f"{container['name']}: {e}")
            continue
        if not (settings.database_url and settings.redis_url):  # else: embedded servers, in the pod
            found.append(f"{container['name']}: DATABASE_URL and REDIS_URL must both be set")
        grace = pod_spec(doc).get("terminationGracePeriodSeconds", 30)
        if doc["kind"] == "Deployment" and grace < settings.shutdown_timeout + 5:
            found.append(f"{doc['metadata']['name']}: grace period {grace}s < HBW_SHUTDOWN_TIMEOUT + 5")
    return found


def keda_problems(docs) -> list[str]:
    """KEDA watches the list a heartbeats enqueue lands in, on the Redis the workers use: the
    namespace is the worker container's, and the list is found by enqueueing for real."""
    found = []
    for doc in find(docs, "ScaledObject"):
        (deployment,) = find(docs, "Deployment", doc["spec"]["scaleTargetRef"]["name"])
        settings = container_settings(docs, pod_spec(deployment)["containers"][0])
        broker = make_broker(settings, client=fakeredis.FakeRedis(server=fakeredis.FakeServer()))
        broker.enqueue(store_message([{"user_id": "ann", "entity": "a.py", "type": "file", "time": 1.0}]))
        lists = {k.decode() for k in broker.client.scan_iter(_type="list")}
        assert lists == {Keys(settings.redis_namespace).ready(HEARTBEATS_QUEUE)}, lists
        url, refs = urllib.parse.urlsplit(settings.redis_url), find(docs, "TriggerAuthentication")[0]["spec"]
        auth = {
            r["parameter"]: data(docs, "Secret", r["name"]).get(r["key"]) for r in refs["secretTargetRef"]
        }
        redis = (f"{url.hostname}:{url.port}", url.path.strip("/") or "0")
        for trigger in doc["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "redis" or meta["listName"] not in lists:
                found.append(f"{trigger['type']} on {meta.get('listName')}: the heartbeats are on {lists}")
            if (auth.get("address"), meta.get("databaseIndex", "0")) != redis:
                found.append(f"KEDA's Redis ({auth.get('address')}) is not REDIS_URL's {redis}")
    return found


CHECKS = (reference_problems, command_problems, env_problems, keda_problems)


def test_the_manifests_are_there():
    kinds = {"Deployment", "Service", "Job", "CronJob", "ScaledObject", "TriggerAuthentication", "Secret"}
    assert kinds <= {d["kind"] for _, d in DOCS}
    assert sorted(line[1] for line in command_lines(DOCS)) == ["db", "health", "reprocess", "serve", "worker"]


@pytest.mark.parametrize("doc", [d for _, d in DOCS], ids=[f"{p}:{d['kind']}" for p, d in DOCS])
def test_every_document_fits_its_schema(doc):
    assert schema_problems(doc) == []


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
def test_what_no_schema_sees(check):
    assert check(DOCS) == []


POD = {"P": pod_spec, "C": lambda d: pod_spec(d)["containers"][0], "T": lambda d: d["spec"]["triggers"][0]}

#: A change to a copy of the manifests, `Kind/name path key=value` (or `path += words`, to a list;
#: P: the pod spec, C: its first container, T: the first trigger), the check that must report it (None: the schemas),
#: and what its report must say.
BREAKAGES = [
    ("Deployment/hbw-worker C.readinessProbe periodSecond=3", None, "periodSecond"),
    ("CronJob/hbw-reprocess spec timezone=UTC", None, "timezone"),
    ("ScaledObject/hbw-worker spec minReplicas=1", None, "minReplicas"),
    ("ScaledObject/hbw-worker T.metadata listLength=5000", None, "5000"),
    ("ScaledObject/hbw-worker metadata label={}", None, "label"),
    ("ScaledObject/hbw-worker spec.scaleTargetRef name=hbw-workers", reference_problems, "hbw-workers"),
    ("ScaledObject/hbw-worker T.authenticationRef name=x", reference_problems, "TriggerAuthentication x"),
    ("Service/hbw-serve spec.selector tier=web", reference_problems, "selects no pods"),
    ("Service/hbw-serve spec.ports.0 targetPort=web", reference_problems, "no container port web"),
    ("Deployment/hbw-serve C.livenessProbe.httpGet port=8081", reference_problems, "no port 8081"),
    ("CronJob/hbw-reprocess C.command += --yesterdays", command_problems, "does not parse"),
    ("Deployment/hbw-worker C.readinessProbe.exec.command += --work 1", command_problems, "--work is not"),
    ("ConfigMap/hbw-config data HBW_METRIC_HOST=0.0.0.0", env_problems, "HBW_METRIC_HOST is no setting"),
    ("Deployment/hbw-worker C.env.0.valueFrom.secretKeyRef key=DB_URL", env_problems, "no value here"),
    ("Deployment/hbw-worker C.env.2 value=soon", env_problems, "shutdown_timeout"),
    ("Deployment/hbw-worker C.env.1 name=REDIS_ADDRESS", env_problems, "must both be set"),
    ("Secret/hbw stringData DATABASE_URL=mysql://db/hbw", env_problems, "not a PostgreSQL URL"),
    ("Deployment/hbw-worker P terminationGracePeriodSeconds=30", env_problems, "grace period 30s"),
    ("ConfigMap/hbw-config data HBW_REDIS_NAMESPACE=hbw2", keda_problems, "are on {'hbw2:heartbeats'}"),
    ("Secret/hbw stringData REDIS_URL=redis://:change-me@redis:6379/1", keda_problems, "not REDIS_URL's"),
]


def broken(change: str) -> list:
    target, path, *edit = change.split(" ")
    docs = copy.deepcopy(DOCS)
    (node,) = find(docs, *target.split("/"))
    for step in path.split("."):
        node = POD[step](node) if step in POD else node[int(step) if isinstance(node, list) else step]
    if edit[0] == "+=":
        node.extend(edit[1:])
    else:
        key, value = edit[0].split("=", 1)
        node[key] = yaml.safe_load(value)
    return docs


@pytest.mark.parametrize(("change", "check", "reported"), BREAKAGES, ids=[b[0] for b in BREAKAGES])
def test_each_check_reports_what_it_is_for(change, check, reported):
    docs = broken(change)
    changed = find(docs, *change.split(" ")[0].split("/"))
    found = check(docs) if check else [problem for doc in changed for problem in schema_problems(doc)]
    assert any(reported in problem for problem in found), found
