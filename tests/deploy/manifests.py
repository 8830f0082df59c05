"""deploy/ as the tests read it: rendered kustomize overlays, their containers, a pod's mounts
made into local directories (its file system without the container), the image's entrypoint,
and `splitmind`'s own argument parser."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
import yaml

from splitmind import curve

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("cpu", "gpu", "multi-gateway")
COMPONENTS = ("gateway", "prefill", "decode")
CONFIG_FILE = "splitmind.toml"
# The oldest Kubernetes the manifests are written for (docs/operations.md), and the newest schema
# kubernetes-validate ships; every object is validated against both.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/PATH`, every object."""
    out = subprocess.run(["kubectl", "kustomize", str(DEPLOY / path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize deploy/{path}: {out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def overlay(name: str) -> tuple[dict[str, Any], ...]:
    return render(f"k8s/overlays/{name}")


def of_kind(objs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def component(o: dict[str, Any]) -> str:
    return str(o["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def deployment(objs: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    [dep] = [d for d in of_kind(objs, "Deployment").values() if component(d) == name]
    return dep


def container(dep: dict[str, Any]) -> dict[str, Any]:
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return dict(c)


def config_map(objs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    [cm] = [o for name, o in of_kind(objs, "ConfigMap").items() if name.startswith("splitmind-config")]
    return cm


def config_text(objs: tuple[dict[str, Any], ...]) -> str:
    return str(config_map(objs)["data"][CONFIG_FILE])


@dataclass(frozen=True)
class Instruction:
    keyword: str
    text: str
    stage: int  # which FROM it belongs to (0: before the first)


def dockerfile(name: str) -> list[Instruction]:
    """deploy/docker/Dockerfile.NAME, one instruction each (continuations joined, comments dropped)."""
    out: list[Instruction] = []
    stage, parts = 0, []
    for line in (DEPLOY / "docker" / f"Dockerfile.{name}").read_text().splitlines():
        text = line.strip()
        if text.startswith("#") or (not text and not parts):
            continue
        if text.endswith("\\"):
            parts.append(text[:-1].strip())
            continue
        keyword, _, rest = " ".join([*parts, text]).partition(" ")
        parts = []
        stage += keyword.upper() == "FROM"
        out.append(Instruction(keyword.upper(), rest.strip(), stage))
    return out


def exec_form(text: str) -> list[str]:
    """A JSON-array instruction's argv (the shell form is refused: signals would go to a shell)."""
    value = yaml.safe_load(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"not exec form: {text}"
    return value


def entrypoint(name: str = "cpu") -> list[str]:
    [ep] = [i for i in dockerfile(name) if i.keyword == "ENTRYPOINT"]
    return exec_form(ep.text)


def parse_cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `splitmind ARGS` as the CLI would, running nothing: (command, its parameters).
    Raises the CLI's usage error for an unknown command, option or a bad value."""
    from splitmind.cli import app

    group = typer.main.get_command(app)
    ctx = group.make_context("splitmind", list(args))
    name, cmd, rest = group.resolve_command(ctx, [*ctx._protected_args, *ctx.args])  # type: ignore[attr-defined]
    assert name is not None and cmd is not None, args
    sub = cmd.make_context(name, rest, parent=ctx)
    return name, dict(sub.params)


def splitmind_args(argv: list[str]) -> list[str]:
    """The arguments after `splitmind` in a command that runs it (the image's entrypoint, or an
    exec probe's command)."""
    assert "splitmind" in argv, argv
    return argv[argv.index("splitmind") + 1:]


def curve_secret(tmp: Path) -> dict[str, bytes]:
    """The Secret splitmind-curve-keys as docs/operations.md makes it: `splitmind keys DIR`, then
    `kubectl create secret generic --from-file=DIR` (the files at its top)."""
    keys = tmp / "made-keys"
    curve.create_keys(keys)
    return {p.name: p.read_bytes() for p in keys.iterdir() if p.is_file()}


def api_secret() -> dict[str, bytes]:
    return {"api-keys": b"sk-deploy-test-1\n", "admin-key": b"sk-deploy-test-admin\n"}


@dataclass
class Pod:
    """A pod's volumes as local directories under `root`, and its container's environment with
    every path inside a mount moved there."""

    root: Path
    mounts: dict[str, Path] = field(default_factory=dict)  # mountPath -> local directory
    env: dict[str, str] = field(default_factory=dict)

    def local(self, path: str) -> str:
        for mount in sorted(self.mounts, key=len, reverse=True):
            if path == mount or path.startswith(mount.rstrip("/") + "/"):
                return str(self.mounts[mount]) + path[len(mount.rstrip("/")):]
        return path

    def argv(self, args: list[str]) -> list[str]:
        return [self.local(a) for a in args]


def make_pod(objs: tuple[dict[str, Any], ...], dep: dict[str, Any], root: Path, secrets: dict[str, dict[str, bytes]],
             fields: dict[str, str], claims: dict[str, Path] | None = None) -> Pod:
    """Lay out `dep`'s volumes under `root` as the kubelet mounts them: ConfigMaps from the rendered
    objects, Secrets from `secrets`, emptyDirs empty, claims as links to `claims`; `fields`: the
    values of the fieldRefs its environment uses (metadata.name, status.podIP)."""
    spec = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    maps = of_kind(objs, "ConfigMap")
    pod = Pod(root)
    for mount in container(dep).get("volumeMounts", []):
        volume, where = volumes[mount["name"]], root / mount["mountPath"].lstrip("/")
        pod.mounts[mount["mountPath"]] = where
        if "persistentVolumeClaim" in volume:
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to((claims or {})[volume["persistentVolumeClaim"]["claimName"]])
            continue
        where.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            files = {k: v.encode() for k, v in maps[volume["configMap"]["name"]]["data"].items()}
            items = volume["configMap"].get("items")
        elif "secret" in volume:
            files = secrets[volume["secret"]["secretName"]]
            items = volume["secret"].get("items")
        else:
            assert "emptyDir" in volume, volume
            continue
        for item in items or [{"key": k, "path": k} for k in files]:
            target = where / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[item["key"]])
            os.chmod(target, 0o600)
    for var in container(dep).get("env", []):
        if "value" in var:
            pod.env[var["name"]] = pod.local(str(var["value"]))
        else:
            pod.env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return pod


PROMQL_METRIC = re.compile(r"\bsplitmind_[a-z0-9_]+\b")


def metric_names(text: str) -> set[str]:
    return set(PROMQL_METRIC.findall(text))


HISTOGRAM_SERIES = ("_bucket", "_sum", "_count", "_created")
COUNTER_SERIES = ("_total", "_created")


def exported_series(exposition: str) -> dict[str, str]:
    """Every series name a Prometheus text exposition can carry -> its family, from the `# TYPE`
    lines (present for a family with no sample yet, so that no traffic is needed)."""
    out = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            base = name.removesuffix("_total") if kind == "counter" else name
            suffixes = {"counter": COUNTER_SERIES, "histogram": HISTOGRAM_SERIES}.get(kind, ("",))
            out.update({base + s: base for s in suffixes})
    return out


def alert_rules() -> list[dict[str, Any]]:
    [rule] = [o for o in render("k8s/monitoring") if o["kind"] == "PrometheusRule"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard() -> dict[str, Any]:
    import json

    return dict(json.loads((DEPLOY / "grafana" / "splitmind.json").read_text()))


def queries() -> dict[str, str]:
    """Every PromQL expression deploy/ holds: alert name or panel title -> expression."""
    out = {f"alert {r['alert']}": str(r["expr"]) for r in alert_rules()}
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            out[f"panel {panel['title']} {target['refId']}"] = str(target["expr"])
    return out
