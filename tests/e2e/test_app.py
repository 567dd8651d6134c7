"""The desktop app end to end: editor, live preview, diagnostics, format, sandbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_APP = (ROOT / "crates/spike-templates/example/App.tsx").read_text()
TITLE_LINE = next(i for i, l in enumerate(EXAMPLE_APP.splitlines(), 1) if "Hello from Spike" in l)
APP_LINE = next(i for i, l in enumerate(EXAMPLE_APP.splitlines(), 1) if "export default function App" in l)
TIMEOUT = 20.0


def until(what: str, check, timeout: float = TIMEOUT):
    """Polls `check` until it returns something truthy; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except WebDriverException as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def handles(driver) -> dict[str, str]:
    """Window handle by webview: `main` (tauri://) and `preview` (preview://)."""
    found: dict[str, str] = {}
    for h in driver.window_handles:
        driver.switch_to.window(h)
        url = driver.current_url
        found["preview" if url.startswith("preview:") else "main"] = h
    return found


def to(driver, label: str) -> None:
    def found():
        hs = handles(driver)
        return hs if label in hs else None

    driver.switch_to.window(until(f"the {label} webview", found)[label])


def preview_text(driver) -> str:
    to(driver, "preview")
    return driver.execute_script("return document.getElementById('root')?.innerText ?? ''")


def overlay_text(driver) -> str:
    to(driver, "preview")
    return driver.execute_script(
        "return document.getElementById('spike-overlay')?.innerText ?? ''"
    )


# The text of the visible editor's lines, without collaborators' caret labels (widgets).
LINES_JS = """
return [...document.querySelectorAll('.editor-host:not([hidden]) .cm-line')].map((line) => {
  const copy = line.cloneNode(true);
  copy.querySelectorAll('.cm-remote-caret').forEach((c) => c.remove());
  return copy.textContent;
});
"""


def editor_line(driver, text: str):
    """The visible editor's line element containing `text`."""
    to(driver, "main")

    def find():
        texts = driver.execute_script(LINES_JS)
        index = next((i for i, t in enumerate(texts) if text in t), None)
        if index is None:
            return None
        return driver.find_elements(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-line")[index]

    return until(f"an editor line containing {text!r}", find)


def line_text(driver, number: int) -> str:
    to(driver, "main")
    return driver.execute_script(LINES_JS)[number - 1]


def type_at_end_of_line(driver, containing: str, keys: list[str]) -> None:
    """Clicks the line containing `containing`, presses End, then types `keys` as key events."""

    def focused_on_line():
        editor_line(driver, containing).click()
        return driver.execute_script(
            "const a = document.activeElement; return !!a && a.classList.contains('cm-content')"
        )

    until(f"the caret on the line containing {containing!r}", focused_on_line)
    content = driver.find_element(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-content")
    content.send_keys(Keys.END, *keys)


def test_the_app_opens_the_example_with_a_file_tree_and_app_tsx(driver, screens):
    to(driver, "main")
    until("the UI to connect to the room", lambda: driver.execute_script(
        "return document.documentElement.dataset.ready === 'true'"))
    files = [el.get_attribute("data-path") for el in driver.find_elements(By.CSS_SELECTOR, ".tree-file")]
    assert files == [
        "components/Counter.tsx",
        "components/TodoList.tsx",
        "hooks/useLocalStorage.ts",
        "lib/format.ts",
        "App.tsx",
        "main.tsx",
    ]
    assert driver.find_element(By.CSS_SELECTOR, ".tab[aria-selected='true']").text.startswith("App.tsx")
    assert driver.find_element(By.ID, "room-title").text == "Spike example"
    editor_line(driver, "Hello from Spike")
    screens.shot("app-open")


def test_the_preview_renders_the_example(driver, screens):
    text = until("the example in the preview", lambda: (t := preview_text(driver)) and "Hello from Spike" in t and t)
    assert "task left" in text  # plural(1, "task") from lib/format.ts: the relative import resolved
    assert "Write a component" in text  # TodoList rendered
    screens.shot("preview-rendered")


def test_typing_in_the_editor_changes_the_preview(driver, screens):
    # The caret goes to the end of the title line, before `");`, and the keys are real key events.
    type_at_end_of_line(driver, "Hello from Spike", [Keys.LEFT, Keys.LEFT, Keys.LEFT, " typed live"])
    until("the typed text in the preview", lambda: "Hello from Spike typed live" in preview_text(driver))
    screens.shot("typed")


def test_a_syntax_error_shows_a_diagnostic_and_keeps_the_last_render(driver, screens):
    type_at_end_of_line(driver, "Hello from Spike typed live", [" <"])
    to(driver, "main")
    problem = until(
        "a problem in App.tsx",
        lambda: next(
            (el.text for el in driver.find_elements(By.CSS_SELECTOR, "#problems .problem") if "App.tsx" in el.text),
            None,
        ),
    )
    # `... ; <` then the next line's `const`: the parser sees a JSX tag `< const open` and fails at
    # the attribute value `=`, column 16 of the line after the title.
    where = f"App.tsx:{TITLE_LINE + 1}:16"
    assert problem.startswith(where), problem
    assert problem.endswith("JSX value should be either an expression or a quoted JSX text"), problem
    assert driver.find_elements(By.CSS_SELECTOR, ".cm-lintRange-error"), "the error is underlined inline"
    overlay = until("the error overlay", lambda: overlay_text(driver))
    assert f"{where}: JSX value should be either an expression" in overlay, overlay
    assert "Hello from Spike typed live" in preview_text(driver), "the last good render stays"
    screens.shot("syntax-error")

    type_at_end_of_line(driver, "Hello from Spike typed live", [Keys.BACKSPACE, Keys.BACKSPACE])
    until("the overlay to go", lambda: overlay_text(driver) == "")
    to(driver, "main")
    until("the problems list to clear", lambda: not driver.find_elements(By.CSS_SELECTOR, "#problems .problem"))


def test_ctrl_s_formats_the_file_as_minimal_edits(driver, screens):
    type_at_end_of_line(driver, "Hello from Spike typed live", [Keys.LEFT, "   "])
    assert line_text(driver, TITLE_LINE).endswith('typed live")   ;')
    content = driver.find_element(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-content")
    content.send_keys(Keys.CONTROL, "s")
    until("the formatted line", lambda: line_text(driver, TITLE_LINE).endswith('typed live");'))
    assert line_text(driver, TITLE_LINE) == '  const [title, setTitle] = useState("Hello from Spike typed live");'
    screens.shot("formatted")


def test_console_output_of_the_preview_reaches_the_console_panel(driver, screens):
    to(driver, "main")
    driver.find_element(By.CSS_SELECTOR, ".tree-file[data-path='main.tsx']").click()
    # closeBrackets inserts the closing `"` and `)`; typing them steps over, as a person types.
    type_at_end_of_line(driver, "createRoot(root).render", [Keys.ENTER, 'console.log("hi from the preview", 42);'])
    to(driver, "main")
    driver.find_element(By.CSS_SELECTOR, ".panel-tab[data-panel='console']").click()
    until(
        "the console line",
        lambda: any(
            el.text == 'hi from the preview 42' for el in driver.find_elements(By.CSS_SELECTOR, "#console .log.log")
        ),
    )
    screens.shot("console")


def test_a_runtime_error_shows_the_overlay_with_the_file(driver, screens):
    to(driver, "main")
    driver.find_element(By.CSS_SELECTOR, ".tree-file[data-path='App.tsx']").click()
    type_at_end_of_line(driver, "export default function App", [Keys.ENTER, 'if (1) throw new Error("boom");'])
    overlay = until("the runtime error overlay", lambda: (t := overlay_text(driver)) and "boom" in t and t)
    assert "Runtime error" in overlay
    # Source-mapped to the TSX: the line typed below `function App() {`, at `Error(` (column 20).
    assert f"at App.tsx:{APP_LINE + 1}:20" in overlay, overlay
    screens.shot("runtime-error")
    # Undo (this user's own edits only) takes the line out again; WebDriver types fast, but the
    # typing may still span more than one undo step.
    for _ in range(5):
        to(driver, "main")
        if not any("boom" in el.text for el in driver.find_elements(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-line")):
            break
        driver.find_element(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-content").send_keys(Keys.CONTROL, "z")
    until("the overlay to go after undo", lambda: overlay_text(driver) == "")
    assert "Hello from Spike typed live" in preview_text(driver)


def test_the_preview_cannot_invoke_app_commands(driver, screens):
    to(driver, "preview")
    outcome = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const ipc = window.__TAURI_INTERNALS__;
        if (!ipc || !ipc.invoke) { done("no IPC object"); return; }
        ipc.invoke("create_file", { path: "pwned.tsx", text: "x" })
          .then(() => done("allowed"), (e) => done("refused: " + String(e)));
        setTimeout(() => done("no answer"), 5000);
        """
    )
    # The ACL refuses it (the app manifest in build.rs makes Tauri check app commands for
    # custom-scheme webviews too, and `preview` is in no capability).
    assert outcome.startswith('refused: create_file not allowed on window "preview"'), outcome
    # The CSP header of the preview:// scheme is in force: no eval.
    blocked = driver.execute_script(
        "try { return 'ran ' + eval('1 + 1'); } catch (e) { return 'blocked: ' + e.name; }"
    )
    assert blocked == "blocked: EvalError", blocked
    to(driver, "main")
    time.sleep(0.5)
    paths = [el.get_attribute("data-path") for el in driver.find_elements(By.CSS_SELECTOR, ".tree-file")]
    assert "pwned.tsx" not in paths
    screens.shot("sandbox")


def test_the_diagnostics_panel_shows_the_connection_and_figures(driver, screens):
    to(driver, "main")
    driver.find_element(By.ID, "diagnostics-tab").click()
    panel = driver.find_element(By.ID, "diagnostics")
    text = until("the diagnostics", lambda: panel.text if "spike_rooms_open 1" in panel.text else None)
    assert "synced — room example on ws://127.0.0.1:" in text, text
    assert "error report(s) waiting to be sent" in text, text
    screens.shot("diagnostics")
    driver.find_element(By.CSS_SELECTOR, ".panel-tab[data-panel='problems']").click()
