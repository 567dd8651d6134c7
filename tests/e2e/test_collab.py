"""Two app instances in one room: each sees the other's edits, in the editor and the preview."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from test_app import TITLE_LINE, editor_line, line_text, preview_text, to, type_at_end_of_line, until


def ready(driver) -> None:
    to(driver, "main")
    until("the UI to connect", lambda: driver.execute_script("return document.documentElement.dataset.ready === 'true'"))
    until("the room to sync", lambda: driver.find_element(By.ID, "status").text == "synced")
    editor_line(driver, "Hello from Spike")


def test_two_instances_see_each_others_edits(pair, screens):
    a, b = pair
    ready(a)
    ready(b)

    type_at_end_of_line(a, "Hello from Spike", [Keys.LEFT, Keys.LEFT, Keys.LEFT, " and A"])
    until("A's edit in B's editor", lambda: line_text(b, TITLE_LINE).endswith('"Hello from Spike and A");'))
    until("A's edit in B's preview", lambda: "Hello from Spike and A" in preview_text(b))

    type_at_end_of_line(b, "Hello from Spike and A", [Keys.LEFT, Keys.LEFT, Keys.LEFT, " and B"])
    until("B's edit in A's editor", lambda: line_text(a, TITLE_LINE).endswith('"Hello from Spike and A and B");'))
    until("B's edit in A's preview", lambda: "Hello from Spike and A and B" in preview_text(a))
    assert line_text(a, TITLE_LINE) == line_text(b, TITLE_LINE)


def test_each_sees_the_other_in_the_room_and_their_cursor(pair, screens):
    a, b = pair
    to(a, "main")
    assert a.find_element(By.ID, "me").text == "Ada"
    until("Bo in Ada's people list", lambda: [el.text for el in a.find_elements(By.CSS_SELECTOR, "#people .person")] == ["Bo"])
    to(b, "main")
    until("Ada in Bo's people list", lambda: [el.text for el in b.find_elements(By.CSS_SELECTOR, "#people .person")] == ["Ada"])
    # Bo's cursor sits in App.tsx where Bo typed: Ada's editor shows a caret labelled Bo.
    to(a, "main")
    caret = until("Bo's caret in Ada's editor", lambda: next(
        (el for el in a.find_elements(By.CSS_SELECTOR, ".editor-host:not([hidden]) .cm-remote-caret") if el.text == "Bo"),
        None,
    ))
    line = caret.find_element(By.XPATH, "./ancestor::div[contains(@class, 'cm-line')]")
    assert line.text == '  const [title, setTitle] = useState("Hello from Spike and A and BBo");', line.text
    screens.shot("presence")
