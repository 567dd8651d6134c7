"""A room mirrored to a folder (edit its files with any editor), and a room watched through a
view-only link."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from conftest import App, free_port
from test_app import TITLE_LINE, editor_line, line_text, preview_text, to, type_at_end_of_line, until
from test_collab import ready


def test_mirror_to_folder_carries_edits_both_ways(driver, screens, tmp_path):
    ready(driver)
    folder = tmp_path / "mirrored room"
    driver.find_element(By.ID, "mirror-button").click()
    field = driver.find_element(By.ID, "mirror-dir")
    assert field.get_attribute("value") == "~/Spike/example", "a folder is proposed"
    field.clear()
    field.send_keys(str(folder))
    driver.find_element(By.ID, "mirror-start").click()
    app = folder / "App.tsx"
    until("App.tsx written into the folder", lambda: app.is_file() and "Hello from Spike" in app.read_text())
    state = until("the dialog's state line", lambda: driver.find_element(By.ID, "mirror-state").text)
    assert state == f"Mirroring room example into {folder}", state
    screens.shot("mirror-dialog")
    driver.find_element(By.CSS_SELECTOR, "#mirror-dialog button[value='close']").click()
    indicator = driver.find_element(By.ID, "mirror-indicator")
    assert indicator.is_displayed() and indicator.get_attribute("textContent") == f"⇄ {folder}"

    # Saved by another editor: the editor and the preview follow.
    app.write_text(app.read_text().replace('"Hello from Spike"', '"Hello from disk"'))
    until("the disk edit in the editor", lambda: '"Hello from disk"' in line_text(driver, TITLE_LINE))
    until("the disk edit in the preview", lambda: "Hello from disk" in preview_text(driver))
    # Typed in Spike: the file follows.
    type_at_end_of_line(driver, "Hello from disk", [Keys.LEFT, Keys.LEFT, Keys.LEFT, " and Spike"])
    until("the typed edit on disk", lambda: '"Hello from disk and Spike"' in app.read_text())
    to(driver, "main")
    lines = [el.get_attribute("textContent") for el in driver.find_elements(By.CSS_SELECTOR, "#mirror-log li")]
    assert any(l.startswith("disk → room  App.tsx: ") and l.endswith(" edit(s)") for l in lines), lines
    assert any(l == "room → disk  App.tsx: written" for l in lines[6:]), lines
    screens.shot("mirror-synced")


def jwt_hs256(secret: bytes, claims: dict) -> str:
    """A room token made the standard way (RFC 7519 with HS256), independently of the server."""
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")  # noqa: E731
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


@pytest.fixture(scope="module")
def editor_and_viewer(app_binary, tmp_path_factory):
    """Ada serves room `example` on the network (tokens required, with a known secret); Vic's app
    starts on a room of its own and is handed a view-only link to Ada's."""
    secret = b"e2e-secret-for-view-links-0123456789abcdef"
    port = free_port()
    ada = App(
        app_binary,
        tmp_path_factory.mktemp("spike-ada"),
        {"SPIKE_PORT": str(port), "SPIKE_NAME": "Ada", "SPIKE_LISTEN": "0.0.0.0", "SPIKE_SECRET": secret.decode()},
    )
    try:
        vic = App(app_binary, tmp_path_factory.mktemp("spike-vic"), {"SPIKE_PORT": str(free_port()), "SPIKE_NAME": "Vic"})
        try:
            now = int(time.time())
            token = jwt_hs256(secret, {"room": "example", "role": "view", "exp": now + 600, "iat": now})
            server = urllib.parse.quote(f"ws://127.0.0.1:{port}/rooms", safe="")
            yield ada.driver, vic.driver, f"spike://room/example?server={server}&token={token}"
        finally:
            vic.close()
    finally:
        ada.close()


def test_a_view_link_watches_but_cannot_write(editor_and_viewer, screens):
    ada, vic, link = editor_and_viewer
    ready(ada)
    ready(vic)
    to(vic, "main")
    vic.find_element(By.ID, "room-button").click()
    vic.find_element(By.ID, "join-link").send_keys(link, Keys.ENTER)
    until("Vic's window in Ada's room", lambda: vic.execute_script("return document.documentElement.dataset.readOnly") == "true")
    ready(vic)
    assert vic.find_element(By.ID, "view-only").is_displayed()
    assert not vic.find_element(By.ID, "format-button").is_displayed()
    assert not vic.find_element(By.ID, "new-file").is_displayed()

    # Ada edits: Vic sees it in the editor and the preview.
    type_at_end_of_line(ada, "Hello from Spike", [Keys.LEFT, Keys.LEFT, Keys.LEFT, " for Vic"])
    until("Ada's edit at Vic", lambda: '"Hello from Spike for Vic"' in line_text(vic, TITLE_LINE))
    until("Ada's edit in Vic's preview", lambda: "Hello from Spike for Vic" in preview_text(vic))

    # Vic types: nothing changes, here or at Ada's.
    to(vic, "main")
    editor_line(vic, "Hello from Spike for Vic").click()
    assert vic.execute_script("return document.querySelector('.editor-host:not([hidden]) .cm-content').contentEditable") == "false"
    ActionChains(vic).send_keys(Keys.END, "typed by Vic").perform()
    time.sleep(1.0)
    assert "typed by Vic" not in line_text(vic, TITLE_LINE)
    assert "typed by Vic" not in line_text(ada, TITLE_LINE)
    to(ada, "main")
    until("Vic among Ada's people", lambda: "Vic" in [el.text for el in ada.find_elements(By.CSS_SELECTOR, "#people .person")])
    to(vic, "main")
    screens.shot("view-only")
