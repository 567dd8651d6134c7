"""The assistant panel: a question answered by a model server on loopback that speaks OpenAI's
streamed Chat Completions, a proposed edit shown as a diff, accepted, and seen by a collaborator."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from selenium.webdriver.common.by import By

from conftest import App, free_port
from test_app import TITLE_LINE, line_text, preview_text, to, until
from test_collab import ready


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


class ModelServer(ThreadingHTTPServer):
    """OpenAI-compatible: POST /v1/chat/completions answers with a text delta, then a
    `search_replace` tool call whose arguments arrive in two pieces, as OpenAI streams them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body})
        args = json.dumps({"path": "App.tsx", "search": '"Hello from Spike"', "replace": '"Hello from the assistant"'})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "search_replace", "arguments": args[:25]}}
        for event in [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "I will rename "}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "the title."}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": args[25:]}}]}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        ]:
            self.wfile.write(sse(event))
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def model():
    server = ModelServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def assisted_pair(app_binary, tmp_path_factory, model):
    """Ada (the assistant set to the model server through her settings file) and Bo, in one room."""
    port = free_port()
    ada_dir = tmp_path_factory.mktemp("spike-ada-ai")
    (ada_dir / "settings.json").write_text(
        json.dumps({"name": "Ada", "aiProvider": "compatible", "aiBaseUrl": model.base, "aiModel": "local-coder"})
    )
    ada = App(app_binary, ada_dir, {"SPIKE_PORT": str(port)})
    try:
        bo = App(app_binary, tmp_path_factory.mktemp("spike-bo-ai"), {"SPIKE_SERVER": f"ws://127.0.0.1:{port}/rooms", "SPIKE_NAME": "Bo"})
        try:
            yield ada.driver, bo.driver
        finally:
            bo.close()
    finally:
        ada.close()


def test_an_accepted_assistant_edit_reaches_a_collaborator(assisted_pair, model, screens):
    ada, bo = assisted_pair
    ready(ada)
    ready(bo)
    to(ada, "main")
    ada.find_element(By.ID, "assistant-tab").click()
    ada.find_element(By.ID, "ai-prompt").send_keys("Rename the title to greet from the assistant")
    ada.find_element(By.ID, "ai-ask").click()
    until("the streamed answer", lambda: ada.find_element(By.ID, "ai-answer").text == "I will rename the title.")
    proposal = until("the proposed diff", lambda: ada.find_element(By.CSS_SELECTOR, ".ai-proposal"))
    removed = [el.text for el in proposal.find_elements(By.CSS_SELECTOR, ".diff-del")]
    added = [el.text for el in proposal.find_elements(By.CSS_SELECTOR, ".diff-add")]
    assert removed == ['-  const [title, setTitle] = useState("Hello from Spike");'], removed
    assert added == ['+  const [title, setTitle] = useState("Hello from the assistant");'], added
    # The request: the configured model, the open file shown, the editing tools offered.
    body = model.requests[0]["body"]
    assert model.requests[0]["path"] == "/v1/chat/completions"
    assert body["model"] == "local-coder" and body["stream"] is True
    assert "The open file, `App.tsx`" in body["messages"][1]["content"]
    assert [t["function"]["name"] for t in body["tools"]] == ["read_file", "replace_range", "search_replace", "create_file"]
    # Nothing changes before accepting.
    assert '"Hello from Spike"' in line_text(bo, TITLE_LINE)
    to(ada, "main")
    # The X screen shows whichever window is on top; this is Ada's own webview.
    ada.save_screenshot(str(screens.directory / "assistant-proposal-ada.png"))
    ada.find_element(By.CSS_SELECTOR, ".ai-proposal .ai-accept").click()
    until("the edit applied", lambda: ada.find_element(By.CSS_SELECTOR, ".ai-proposal .ai-state").text == "Applied to App.tsx")
    until("the edit in Ada's editor", lambda: '"Hello from the assistant"' in line_text(ada, TITLE_LINE))
    until("the edit in Bo's editor", lambda: '"Hello from the assistant"' in line_text(bo, TITLE_LINE))
    until("the edit in Bo's preview", lambda: "Hello from the assistant" in preview_text(bo))
    to(ada, "main")
    ada.save_screenshot(str(screens.directory / "assistant-applied-ada.png"))
