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


def people(driver) -> list[str]:
    to(driver, "main")
    return [el.text for el in driver.find_elements(By.CSS_SELECTOR, "#people .person")]


def test_clicking_a_person_follows_their_cursor_across_files(pair, screens):
    a, b = pair
    to(a, "main")
    chip = until("Bo's chip", lambda: next((el for el in a.find_elements(By.CSS_SELECTOR, "#people .person") if el.text == "Bo"), None))
    chip.click()
    until("Ada following Bo", lambda: a.find_element(By.CSS_SELECTOR, "#people .person").get_attribute("data-following") == "true")
    # Bo opens another file and clicks into it: Ada's window goes there too.
    to(b, "main")
    until("Bo's file tree", lambda: b.find_element(By.CSS_SELECTOR, "#file-tree li[data-path='main.tsx'] .tree-name")).click()
    editor_line(b, "createRoot").click()
    to(a, "main")
    until(
        "Ada's active tab to follow Bo to main.tsx",
        lambda: a.find_element(By.CSS_SELECTOR, "#tabs .tab[aria-selected='true']").get_attribute("data-path") == "main.tsx",
    )
    screens.shot("following")
    a.find_element(By.CSS_SELECTOR, "#people .person").click()
    until("Ada no longer following", lambda: a.find_element(By.CSS_SELECTOR, "#people .person").get_attribute("data-following") == "false")


def test_settings_change_the_name_peers_see_and_refuse_bad_values(pair, screens):
    a, b = pair
    to(b, "main")
    b.find_element(By.ID, "settings-button").click()
    name = until("the settings dialog", lambda: b.find_element(By.ID, "settings-name") if b.find_element(By.ID, "settings-dialog").get_attribute("open") is not None else None)
    server = b.find_element(By.ID, "settings-server")
    server.clear()
    server.send_keys("http://not-a-room-server")
    b.find_element(By.ID, "settings-save").click()
    error = until("an error naming the field", lambda: b.find_element(By.ID, "settings-error").text)
    assert "`server`" in error, error
    screens.shot("settings-error")
    server.clear()
    name.clear()
    name.send_keys("Bea")
    b.find_element(By.ID, "settings-save").click()
    until("the dialog to close", lambda: b.find_element(By.ID, "settings-dialog").get_attribute("open") is None)
    until("Bo's own badge renamed", lambda: b.find_element(By.ID, "me").text == "Bea")
    until("Ada to see Bea", lambda: people(a) == ["Bea"])


def in_room(driver) -> str | None:
    to(driver, "main")
    return driver.execute_script("return document.documentElement.dataset.room ?? null")


def share_link(driver) -> str:
    to(driver, "main")
    driver.find_element(By.ID, "room-button").click()
    link = until("the share link", lambda: driver.find_element(By.ID, "share-link").get_attribute("value"))
    return link


def close_room_dialog(driver) -> None:
    driver.find_element(By.CSS_SELECTOR, "#room-dialog button[value='close']").click()


def test_a_new_room_is_shared_by_link_and_joined(pair, screens):
    a, b = pair
    first = share_link(a)
    assert first.startswith("spike://room/example?server=ws%3A%2F%2F127.0.0.1%3A"), first
    ws = a.find_element(By.ID, "share-ws").get_attribute("value")
    assert ws.startswith("ws://127.0.0.1:") and ws.endswith("/rooms/example"), ws
    screens.shot("share-dialog")
    # The X screen shows whichever window is on top; this is Ada's own webview.
    a.save_screenshot(str(screens.directory / "share-dialog-ada.png"))
    a.find_element(By.ID, "new-room").click()
    # The window reloads into the new room, seeded with the example project.
    until("Ada's window in a new room", lambda: in_room(a) not in (None, "", "example"))
    ready(a)
    link = share_link(a)
    assert link != first and link.startswith("spike://room/room-"), link
    close_room_dialog(a)

    # Bo pastes Ada's link into "Join a room".
    share_link(b)
    b.find_element(By.ID, "join-link").send_keys("not a link", Keys.ENTER)
    error = until("a clear error for a bad link", lambda: b.find_element(By.ID, "room-error").text)
    assert "invalid room link" in error and "not a URL" in error, error
    field = b.find_element(By.ID, "join-link")
    field.clear()
    field.send_keys(link, Keys.ENTER)
    until("Bea's window in Ada's new room", lambda: in_room(b) == in_room(a))
    ready(b)
    assert share_link(b) == link
    close_room_dialog(b)
    until("Bea in Ada's new room", lambda: people(a) == ["Bea"])
    type_at_end_of_line(a, "Hello from Spike", [Keys.LEFT, Keys.LEFT, Keys.LEFT, " in a new room"])
    until("Ada's edit at Bea", lambda: "Hello from Spike in a new room" in line_text(b, TITLE_LINE))
    screens.shot("joined-by-link")
