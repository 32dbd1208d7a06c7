"""deploy/ agrees with the Dockerfile: ports, paths, probe endpoints, config path, user, read-only root."""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge import config as config_mod
from bridge.config import split_host_port
from bridge.store import sqlite_path
from tests.support import dockerfile
from tests.support.harness import InProcessBridge

ROOT = dockerfile.ROOT
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "docker-compose.yaml"
CONTAINER_CONFIG = ROOT / "deploy" / "config.container.yaml"


class Image:
    """What the Dockerfile promises, read from it."""

    def __init__(self) -> None:
        stages = dockerfile.parse()
        self.stages = stages
        self.final = stages[-1]
        self.cmd = dockerfile.exec_form(self.final.last("CMD"))
        self.health_options, self.health_cmd = dockerfile.healthcheck(self.final)
        self.user = self.final.last("USER")
        self.uid, _, gid = self.user.partition(":")
        self.gid = gid or self.uid
        self.workdir = self.final.last("WORKDIR")
        self.volumes = [v for args in self.final.all("VOLUME") for v in yaml.safe_load(args)]
        self.exposed = dockerfile.exposed_ports(self.final)
        assert self.cmd[:3] == ["alert-bridge", "serve", "-c"], self.cmd
        self.config_path = self.cmd[3]
        self.config = yaml.safe_load(CONTAINER_CONFIG.read_text())
        self.webhook_port = split_host_port(self.config["server"]["listen"])[1]
        self.admin_port = split_host_port(self.config["server"]["admin_listen"])[1]


@pytest.fixture(scope="module")
def image() -> Image:
    return Image()


def k8s_docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                docs[doc["kind"]] = doc
    return docs


def bridge_container(deployment: dict[str, Any]) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = [c for c in (*pod["containers"], *pod.get("initContainers", []))
                                    if "alert-bridge" in c["image"]]
    assert len(found) == 1
    return found[0]


def parse_config(data: dict[str, Any], env: dict[str, str]) -> config_mod.Config:
    """Parse a shipped config as the bridge would."""
    return config_mod.parse(data, env=env)


SIDECAR = K8S / "sidecar" / "deployment.yaml"


def sidecar_docs() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(SIDECAR.read_text()) if doc}


# --- the Dockerfile itself -------------------------------------------------------------------------


def test_dockerfile_shape(image: Image) -> None:
    assert len(image.stages) >= 2, "multi-stage"
    assert all(s.base == "python:3.11-slim" for s in image.stages)
    assert image.uid.isdigit() and int(image.uid) != 0 and int(image.gid) != 0, "numeric non-root USER"
    assert image.workdir == "/data" and image.volumes == ["/data"]
    assert set(image.exposed) == {image.webhook_port, image.admin_port}
    assert image.health_cmd[:2] == ["alert-bridge", "healthcheck"]
    assert image.health_cmd[2:] == ["-c", image.config_path]
    assert image.config_path == "/etc/alert-bridge/config.yaml"
    assert (None, ["deploy/config.container.yaml"], image.config_path) in dockerfile.copies(image.final)
    venv = [dest for src_stage, _, dest in dockerfile.copies(image.final) if src_stage == image.stages[0].name]
    assert venv == ["/opt/alert-bridge"]
    assert dockerfile.env(image.final)["PATH"].startswith("/opt/alert-bridge/bin:")
    for stage in image.stages:
        for run in stage.all("RUN"):
            assert not re.search(r"\b(curl|wget)\b", run), "no curl or wget in the image"


def test_container_config_listens_inside_and_writes_only_to_data(image: Image) -> None:
    server = image.config["server"]
    assert split_host_port(server["listen"])[0] == "0.0.0.0"
    url = image.config["storage"]["url"]
    assert url.startswith("sqlite:///") and str(sqlite_path(url).parent) == "/data"
    names = set(re.findall(r"\$\{([A-Z_]+)", CONTAINER_CONFIG.read_text()))
    assert names == {"THUNDERSTACK_API_TOKEN", "ALERT_BRIDGE_ADMIN_TOKEN"}
    assert server["admin_token"] == "${ALERT_BRIDGE_ADMIN_TOKEN}", "the admin port listens beyond loopback"
    cfg = parse_config(image.config, env={"THUNDERSTACK_API_TOKEN": "t", "ALERT_BRIDGE_ADMIN_TOKEN": "a" * 32})
    assert cfg.log.format == "json"


def _ignored(patterns: list[str], path: str) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.rstrip("/") + "/*") or pat == "*":
            ignored = not negate
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_nothing_secret(image: Image) -> None:
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for stage in image.stages:
        for from_stage, sources, _ in dockerfile.copies(stage):
            if from_stage is None:
                for src in sources:
                    assert (ROOT / src).exists(), src
                    assert not _ignored(patterns, src.rstrip("/") + ("/__init__.py" if src.endswith("/") else "")), src
    for private in ("examples/dev-keys/private.pem", "data/alert-bridge.db", "tests/conftest.py", ".git/config"):
        assert _ignored(patterns, private), private


# --- Kubernetes ------------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_deployment_runs_the_image_as_the_dockerfile_says(image: Image) -> None:
    docs = k8s_docs()
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1 and "initContainers" not in pod, "the standalone form is the default"
    assert deployment["spec"]["replicas"] == 1, "SQLite on a ReadWriteOnce volume: one replica"
    c = bridge_container(deployment)
    assert "command" not in c and "args" not in c, "the image's CMD runs"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"webhook": image.webhook_port, "admin": image.admin_port}

    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and str(sc["runAsUser"]) == image.uid and str(sc["runAsGroup"]) == image.gid
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert str(pod["securityContext"]["fsGroup"]) == image.gid

    def port_of(probe: dict[str, Any]) -> int:
        port = probe["httpGet"]["port"]
        return ports[port] if isinstance(port, str) else int(port)

    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {port_of(c[p]) for p in ("livenessProbe", "readinessProbe", "startupProbe")} == {image.webhook_port}

    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_dir, config_file = posixpath.split(image.config_path)
    assert mounts[config_dir]["readOnly"] is True
    configmap = volumes[mounts[config_dir]["name"]]["configMap"]["name"]
    assert configmap == docs["ConfigMap"]["metadata"]["name"]
    assert config_file in docs["ConfigMap"]["data"]
    for volume in image.volumes:
        assert volume in mounts and not mounts[volume].get("readOnly", False), f"{volume} is writable"
    data = volumes[mounts["/data"]["name"]]
    assert data["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one SQLite owner at a time
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(image.admin_port)


def test_configmap_config_agrees_with_the_pod(image: Image, tmp_path: Path) -> None:
    docs = k8s_docs()
    c = bridge_container(docs["Deployment"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    pod_volumes = {v["name"]: v for v in docs["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    [secret_volume] = [n for n, v in pod_volumes.items() if "secret" in v]
    assert pod_volumes[secret_volume]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    secret_dir = mounts[secret_volume]
    secret_keys = set(docs["Secret"]["stringData"])

    text = docs["ConfigMap"]["data"][posixpath.basename(image.config_path)]
    files = re.findall(r"_file:\s*(\S+)", text)
    assert files, "secrets come from files"
    for path in files:
        assert posixpath.dirname(path) == secret_dir and posixpath.basename(path) in secret_keys, path
        (tmp_path / posixpath.basename(path)).write_text("https://hooks.slack.test/services/T/B/x\n")
    cfg = parse_config(yaml.safe_load(text.replace(secret_dir, str(tmp_path))), env={})
    assert split_host_port(cfg.server.listen) == ("0.0.0.0", ports["webhook"])
    assert split_host_port(cfg.server.admin_listen)[1] == ports["admin"]
    assert str(sqlite_path(cfg.storage.url).parent) == "/data"
    assert cfg.verification.api_token is not None
    assert yaml.safe_load(text)["server"]["admin_token_file"] == f"{secret_dir}/admin-token"
    assert "admin-token" in secret_keys


def test_sidecar_probes_cannot_take_the_application_down(image: Image) -> None:
    docs = sidecar_docs()
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [sidecar] = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always", "a native sidecar: starts before the app, stops after it"
    assert [c["name"] for c in pod["containers"]] == ["app"]
    # A pod is Ready only when all its containers are: the bridge's readiness must not depend on
    # the public key (what /readyz reports), or a ThunderStack outage removes the app from its Service.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert sidecar[probe]["httpGet"]["path"] == "/healthz", probe
    assert deployment["spec"]["strategy"]["type"] == "Recreate" and deployment["spec"]["replicas"] == 1
    standalone = bridge_container(k8s_docs()["Deployment"])
    for key in ("image", "ports", "securityContext", "volumeMounts", "resources"):
        assert sidecar[key] == standalone[key], key
    assert pod["volumes"] == k8s_docs()["Deployment"]["spec"]["template"]["spec"]["volumes"]
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["metadata"]["name"] == k8s_docs()["Service"]["metadata"]["name"]


@pytest.mark.parametrize("form", ["standalone", "sidecar"])
def test_network_policy_keeps_the_admin_port_to_monitoring(form: str) -> None:
    docs = k8s_docs() if form == "standalone" else sidecar_docs()
    policy, deployment = docs["NetworkPolicy"], docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"] for p in bridge_container(deployment)["ports"]}
    open_to_all = {p["port"] for rule in policy["spec"]["ingress"] if "from" not in rule for p in rule["ports"]}
    restricted = {p["port"] for rule in policy["spec"]["ingress"] if rule.get("from") for p in rule["ports"]}
    assert "webhook" in open_to_all and "admin" not in open_to_all
    assert restricted == {"admin"} and ports == {"webhook", "admin"}


def test_image_installs_pinned_dependencies(image: Image) -> None:
    import tomllib

    runs = " ".join(run for stage in image.stages for run in stage.all("RUN"))
    assert re.search(r"pip install [^&]*-c constraints\.txt", runs), "the image installs with constraints"
    assert any("constraints.txt" in sources for _, sources, _ in dockerfile.copies(image.stages[0]))
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{line!r} is not pinned with =="
            pins[name] = version
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        name = re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in constraints.txt"


def test_service_exposes_the_webhook_port_only(image: Image) -> None:
    docs = k8s_docs()
    service, deployment = docs["Service"], docs["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in bridge_container(deployment)["ports"]}
    targets = [p["targetPort"] for p in service["spec"]["ports"]]
    assert [ports[t] if isinstance(t, str) else t for t in targets] == [image.webhook_port]


async def test_probe_endpoints_answer_on_the_webhook_port(bridge: Callable[..., Any]) -> None:
    """The paths the probes name exist on the webhook listener (which the pod exposes)."""
    docs = k8s_docs()
    c = bridge_container(docs["Deployment"])
    b: InProcessBridge = await bridge()
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        status, _ = await b.get(b.base_url + c[probe]["httpGet"]["path"])
        assert status == 200, probe


# --- Compose ---------------------------------------------------------------------------------------


def test_compose_agrees_with_the_image(image: Image) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    svc = compose["services"]["alert-bridge"]
    assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == dockerfile.DOCKERFILE
    assert svc["user"] == image.user
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    published = {}
    for spec in svc["ports"]:
        *host, container = str(spec).split(":")
        published[int(container)] = host
    assert published[image.webhook_port] == [str(image.webhook_port)]
    assert published[image.admin_port][0] == "127.0.0.1", "the admin port stays on the host's loopback"
    mounts = {}
    for spec in svc["volumes"]:
        src, dest, *mode = spec.split(":")
        mounts[dest] = (src, mode)
    src, mode = mounts[image.config_path]
    assert mode == ["ro"] and (COMPOSE.parent / src).resolve() == CONTAINER_CONFIG
    assert mounts["/data"][0] in compose["volumes"]
    assert svc["healthcheck"]["test"] == ["CMD", *image.health_cmd]
    assert "THUNDERSTACK_API_TOKEN" in svc["environment"]
    assert "ALERT_BRIDGE_ADMIN_TOKEN" in svc["environment"]
