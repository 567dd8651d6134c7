"""The Linux .deb: its contents, and the app extracted from it running with no dev server.

`cargo xtask test` (and `cargo xtask bundle --test`) builds the package, extracts it with
`dpkg-deb -x` and runs this file with:
- SPIKE_BUNDLE_DEB: the .deb;
- SPIKE_BUNDLE_APP: `usr/bin/spike-desktop` of the extracted tree.
Without them (the plain e2e run) the whole file is skipped.
"""

from __future__ import annotations

import configparser
import io
import json
import os
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from test_app import preview_text, to, until

ROOT = Path(__file__).resolve().parents[2]
DEB = os.environ.get("SPIKE_BUNDLE_DEB")
APP = os.environ.get("SPIKE_BUNDLE_APP")

pytestmark = pytest.mark.skipif(
    not (DEB and APP),
    reason="SPIKE_BUNDLE_DEB and SPIKE_BUNDLE_APP are not set: `cargo xtask bundle --debug --test` "
    "(or `cargo xtask test`) builds, extracts and tests the .deb",
)

ICONS = {  # path in the package -> (width, height)
    f"usr/share/icons/hicolor/{n}x{n}/apps/spike.png": (n, n) for n in (32, 128, 256, 512)
}
DESKTOP = "usr/share/applications/spike.desktop"


@pytest.fixture(scope="module")
def app_binary() -> str:
    """Overrides conftest's: the e2e fixtures (`driver`) launch the binary from the package."""
    assert Path(APP).is_file(), f"{APP} is not in the extracted package"
    return APP


@dataclass
class Package:
    """The data archive of the .deb, as dpkg-deb reads it: paths without the leading `./`."""

    members: dict[str, tarfile.TarInfo]
    files: dict[str, bytes]  # the contents of the .desktop entry and the icons


@pytest.fixture(scope="module")
def package() -> Package:
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", DEB], check=True, capture_output=True).stdout
    members, files = {}, {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar.getmembers():
            name = info.name.removeprefix("./")
            members[name] = info
            if info.isfile() and (name == DESKTOP or name in ICONS):
                files[name] = tar.extractfile(info).read()
    return Package(members, files)


def field(name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", DEB, name], check=True, capture_output=True, text=True).stdout.strip()


def test_the_control_file_names_the_package_and_the_runtime_libraries():
    assert field("Package") == "spike"
    assert field("Section") == "devel"
    assert field("Maintainer")
    config = json.loads((ROOT / "tauri.conf.json").read_text())
    wanted = config["bundle"]["linux"]["deb"]["depends"]
    # cargo-deb sorts the list.
    assert sorted(d.strip() for d in field("Depends").split(",")) == sorted(wanted)


def test_the_package_installs_the_app_as_an_executable(package):
    app = package.members.get("usr/bin/spike-desktop")
    assert app is not None and app.isfile(), "usr/bin/spike-desktop is in the package"
    assert app.mode & 0o755 == 0o755
    assert app.size == Path(APP).stat().st_size


def test_the_desktop_entry_starts_the_app_and_opens_spike_links(package):
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive
    entry.read_string(package.files[DESKTOP].decode())
    desktop = entry["Desktop Entry"]
    assert desktop["Type"] == "Application"
    assert desktop["Name"] == "Spike"
    assert desktop["Exec"] == "spike-desktop %U"
    assert desktop["Icon"] == "spike"
    assert "x-scheme-handler/spike" in desktop["MimeType"].split(";")
    assert {"Development", "IDE"} <= set(desktop["Categories"].split(";"))


def test_the_icons_are_pngs_of_their_hicolor_sizes(package):
    for path, size in ICONS.items():
        png = package.files.get(path)
        assert png is not None, f"{path} is in the package"
        assert png[:8] == b"\x89PNG\r\n\x1a\n", path
        # The IHDR chunk comes first: width and height, big-endian u32, at bytes 16..24.
        assert struct.unpack(">II", png[16:24]) == size, path


def test_the_bundled_app_opens_the_example_with_its_embedded_ui(driver, screens):
    to(driver, "main")
    assert driver.current_url.startswith("tauri:"), driver.current_url
    until("the UI to connect to the room", lambda: driver.execute_script(
        "return document.documentElement.dataset.ready === 'true'"))
    files = [el.get_attribute("data-path") for el in driver.find_elements(By.CSS_SELECTOR, ".tree-file")]
    assert "App.tsx" in files and "components/Counter.tsx" in files, files
    assert driver.find_element(By.ID, "room-title").text == "Spike example"
    screens.shot("bundle-app-open")


def test_the_bundled_app_renders_the_preview(driver, screens):
    text = until("the example in the preview", lambda: (t := preview_text(driver)) and "Hello from Spike" in t and t)
    assert "Write a component" in text  # TodoList rendered, React from the embedded vendor bundle
    screens.shot("bundle-preview")
