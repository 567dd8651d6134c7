"""npm packages in the preview: a folder whose App imports a package opens as a room, the preview
renders it from an ESM CDN on loopback (a redirect, nested imports, React left to the app), and
renders it again after a restart with the CDN gone (and the folder's mirror resumes); a package
never fetched is named in the preview's error overlay."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from conftest import App, free_port
from test_app import editor_line, overlay_text, preview_text, to, until
from test_collab import ready

MODULES = {
    "/confetti-lite@1.0.0?external=react,react-dom": (
        'export * from "/confetti-lite@1.0.0/es2022/confetti-lite.mjs";\n'
        'export { default } from "/confetti-lite@1.0.0/es2022/confetti-lite.mjs";\n'
    ),
    "/confetti-lite@1.0.0/es2022/confetti-lite.mjs": (
        'import { createElement } from "react";\n'
        'import { stars } from "./stars.mjs";\n'
        "export default function Confetti({ n }) {\n"
        '  return createElement("p", { id: "confetti" }, "confetti " + stars(n));\n'
        "}\n"
    ),
    "/confetti-lite@1.0.0/es2022/stars.mjs": 'export const stars = (n) => "*".repeat(n);\n',
}


class Cdn(ThreadingHTTPServer):
    """An ESM CDN the way esm.sh answers: the bare package redirects to its version, whose module
    re-exports the build, which imports a sibling and (bare) React."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), CdnHandler)
        self.paths: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class CdnHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path == "/confetti-lite?external=react,react-dom":
            self.send_response(302)
            self.send_header("Location", "/confetti-lite@1.0.0?external=react,react-dom")
            self.send_header("Cache-Control", "public, max-age=600")
            self.end_headers()
            return
        body = MODULES.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/javascript; charset=utf-8")
        self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        self.end_headers()
        self.wfile.write(body.encode())


def test_an_npm_package_renders_online_then_offline_after_a_restart(app_binary, tmp_path_factory, screens):
    cdn = Cdn()
    serving = threading.Thread(target=cdn.serve_forever, daemon=True)
    serving.start()
    data = tmp_path_factory.mktemp("spike-npm")
    (data / "settings.json").write_text(json.dumps({"name": "Ada", "cdn": cdn.base}))
    folder = tmp_path_factory.mktemp("party")
    (folder / "main.tsx").write_text(
        'import { createRoot } from "react-dom/client";\nimport App from "./App";\n\n'
        'const root = document.getElementById("root");\nif (root) createRoot(root).render(<App />);\n'
    )
    (folder / "App.tsx").write_text(
        'import Confetti from "confetti-lite";\n\n'
        "export default function App() {\n"
        "  return (\n    <main>\n      <h1>Party</h1>\n      <Confetti n={3} />\n    </main>\n  );\n}\n"
    )
    env = {"SPIKE_PORT": str(free_port())}
    app = App(app_binary, data, env)
    try:
        driver = app.driver
        ready(driver)
        driver.find_element(By.ID, "mirror-button").click()
        field = driver.find_element(By.ID, "mirror-dir")
        field.clear()
        field.send_keys(str(folder))
        driver.find_element(By.ID, "open-folder").click()
        until("the folder's room in the preview", lambda: "confetti ***" in preview_text(driver), timeout=40)
        assert "Party" in preview_text(driver)
        assert cdn.paths[0] == "/confetti-lite?external=react,react-dom", cdn.paths
        assert set(cdn.paths) == {"/confetti-lite?external=react,react-dom", *MODULES}, cdn.paths
        screens.shot("npm-online")
    finally:
        app.close()

    cdn.shutdown()
    cdn.server_close()
    fetched = len(cdn.paths)
    app = App(app_binary, data, env)
    try:
        driver = app.driver
        to(driver, "main")
        until("the app to reopen the folder's room", lambda: driver.execute_script("return document.documentElement.dataset.ready === 'true'"))
        until("the package from the cache, offline", lambda: "confetti ***" in preview_text(driver), timeout=40)
        assert len(cdn.paths) == fetched, "nothing reached the (stopped) CDN"
        screens.shot("npm-offline-after-restart")

        # The folder's mirror came back with its room: the top bar says so, and a file saved on
        # disk reaches the preview.
        to(driver, "main")
        indicator = driver.find_element(By.ID, "mirror-indicator")
        until("the folder mirror resumed after the restart", lambda: indicator.get_attribute("textContent") == f"⇄ {folder}")
        assert indicator.is_displayed()
        app_file = folder / "App.tsx"
        app_file.write_text(app_file.read_text().replace("<h1>Party</h1>", "<h1>Party on</h1>"))
        until("a disk edit after the restart in the preview", lambda: "Party on" in preview_text(driver))
        to(driver, "main")

        # A package never fetched: the overlay names it and why.
        editor_line(driver, "import Confetti").click()
        content = driver.find_element(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-content")
        content.send_keys(Keys.END, Keys.ENTER, 'import "left-pad-esm";')
        message = until(
            "the missing package in the overlay",
            lambda: (lambda t: t if 'The package "left-pad-esm" could not be loaded' in t else None)(overlay_text(driver)),
            timeout=40,
        )
        assert "offline or unreachable, and not in the cache" in message, message
        screens.shot("npm-missing-offline")
    finally:
        app.close()
