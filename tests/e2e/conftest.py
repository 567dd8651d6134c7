"""Fixtures of Spike's end-to-end suite: the real desktop app under Xvfb, driven over WebDriver.

`cargo xtask e2e` runs this suite inside `xvfb-run` with:
- SPIKE_APP: the spike-desktop binary to launch;
- SPIKE_E2E_ARTIFACTS: where screenshots go (one PNG per step, `import -window root`).

The chain is selenium -> tauri-driver -> WebKitWebDriver -> the app; every webview of the app
(the editor window `main`, the sandboxed `preview`) is a window handle.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.options import ArgOptions
from selenium.webdriver.remote.client_config import ClientConfig
from selenium.webdriver.remote.remote_connection import RemoteConnection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tauri-driver exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"tauri-driver did not listen on {port} within {timeout}s")


class Screens:
    """Numbered screenshots of the whole X screen, saved as test artefacts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.n = 0
        directory.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> Path | None:
        self.n += 1
        path = self.directory / f"{self.n:02d}-{name}.png"
        # WebKitGTK paints on its next frame; a DOM assertion can pass before the pixels change.
        time.sleep(0.7)
        if shutil.which("import") and os.environ.get("DISPLAY"):
            subprocess.run(["import", "-window", "root", str(path)], check=False, timeout=30)
            return path
        return None


@pytest.fixture(scope="session")
def screens() -> Screens:
    directory = Path(os.environ.get("SPIKE_E2E_ARTIFACTS", ROOT / "target" / "e2e"))
    return Screens(directory)


@pytest.fixture(scope="session")
def app_binary() -> str:
    app = os.environ.get("SPIKE_APP")
    if not app or not Path(app).is_file():
        pytest.fail("SPIKE_APP must name the built spike-desktop binary (run `cargo xtask e2e`)")
    return app


class App:
    """One running app instance behind its own tauri-driver."""

    def __init__(self, app_binary: str, data_dir: Path, extra_env: dict[str, str]) -> None:
        port, native_port = free_port(), free_port()
        env = dict(os.environ, SPIKE_DATA_DIR=str(data_dir), RUST_LOG="info,spike_desktop=debug", **extra_env)
        self.log = open(data_dir / "tauri-driver.log", "wb")
        self.proc = subprocess.Popen(
            ["tauri-driver", "--port", str(port), "--native-port", str(native_port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.driver = None
        try:
            wait_for_port(port, self.proc)
            # tauri-driver starts WebKitWebDriver on the native port; a session request before
            # that one listens fails with "connection refused".
            wait_for_port(native_port, self.proc)
            options = ArgOptions()
            options.set_capability("browserName", "wry")
            options.set_capability("tauri:options", {"application": app_binary})
            self.driver = webdriver.Remote(
                command_executor=RemoteConnection(client_config=ClientConfig(f"http://127.0.0.1:{port}")),
                options=options,
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                self.driver = None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def driver(app_binary: str, tmp_path_factory: pytest.TempPathFactory):
    """The app, fresh (its own data directory and embedded server port, so the room starts as
    the example and never joins another Spike on this machine), per module."""
    app = App(app_binary, tmp_path_factory.mktemp("spike-data"), {"SPIKE_PORT": str(free_port())})
    try:
        yield app.driver
    finally:
        app.close()


@pytest.fixture(scope="module")
def pair(app_binary: str, tmp_path_factory: pytest.TempPathFactory):
    """Two app instances in one room: the first serves it (embedded server), the second joins
    it by URL, each with its own data directory."""
    port = free_port()
    first = App(app_binary, tmp_path_factory.mktemp("spike-a"), {"SPIKE_PORT": str(port), "SPIKE_NAME": "Ada"})
    try:
        second = App(
            app_binary,
            tmp_path_factory.mktemp("spike-b"),
            {"SPIKE_SERVER": f"ws://127.0.0.1:{port}/rooms", "SPIKE_NAME": "Bo"},
        )
        try:
            yield first.driver, second.driver
        finally:
            second.close()
    finally:
        first.close()
