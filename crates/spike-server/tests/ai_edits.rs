//! An AI edit reaching a second client through a real spike-server on loopback: the model's
//! streamed tool calls, validated and applied to one client's session as CRDT edits, arrive in a
//! peer's copy of the room beside the peer's own concurrent edit. (Moved here from spike-ai's
//! tests: spike-ai sits below the server, so its tests may not depend on it.)

// The scripted provider server of spike-ai's tests, shared rather than copied.
#[path = "../../spike-ai/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{request, Reply, Server};
use serde_json::json;
use spike_ai::{
    apply_to_session, collect_answer, editing_tools, Edit, OpenAi, Provider as _, ToolRequest,
};
use spike_collab::{Session, SessionConfig, TextEdit};
use spike_server::{Server as RoomServer, ServerConfig};

const APP: &str = "import { useState } from \"react\";\n\
export default function App() {\n  \
  const [n, setN] = useState(0);\n  \
  return <button onClick={() => setN(n + 1)}>{n} clicks 👋</button>;\n\
}\n";

/// Every wait ends as soon as its condition holds; this only bounds a failing test.
const T: Duration = Duration::from_secs(20);

fn session(url: &str, client_id: u64) -> Session {
    let mut c = SessionConfig::new(url, "ai-room");
    c.client_id = Some(client_id);
    c.min_backoff = Duration::from_millis(5);
    c.max_backoff = Duration::from_millis(100);
    Session::open(c).expect("session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_ai_edit_arrives_in_a_second_clients_copy_of_the_room() {
    // The room server.
    let data = tempfile::tempdir().expect("server data dir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback port");
    let server = RoomServer::new(ServerConfig::new(data.path()))
        .expect("server")
        .spawn(listener)
        .expect("serving");
    let url = server.rooms_url();

    let me = session(&url, 1);
    let peer = session(&url, 2);
    me.wait_confirmed(T).await.expect("synced");
    peer.wait_confirmed(T).await.expect("synced");
    me.create_file("App.tsx", APP).expect("create");
    peer.wait_doc(T, "App.tsx", |d| d.read("App.tsx").is_some())
        .await
        .expect("peer has the file");

    // The model answers with two tool calls, streamed in OpenAI's format.
    let args1 =
        json!({"path": "App.tsx", "search": "{n} clicks", "replace": "{n} taps"}).to_string();
    let args2 =
        json!({"path": "util.ts", "content": "export const twice = (n: number) => 2 * n;\n"})
            .to_string();
    let (a, b) = args1.split_at(17);
    let delta = |index: u32, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut call = json!({"index": index, "function": {"arguments": args}});
        if let (Some(id), Some(name)) = (id, name) {
            call["id"] = json!(id);
            call["type"] = json!("function");
            call["function"]["name"] = json!(name);
        }
        format!(
            "data: {}\n\n",
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null}]})
        )
        .into_bytes()
    };
    let mut reply = Reply::sse(&[]);
    reply.pieces = vec![
        delta(0, Some("call_1"), Some("search_replace"), a),
        delta(0, None, None, b),
        delta(1, Some("call_2"), Some("create_file"), &args2),
        b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n".to_vec(),
    ];
    let model = Server::start(vec![reply]).await;
    let provider = OpenAi::new(model.base(), "sk-test").expect("provider");
    let mut req = request();
    req.tools = editing_tools();
    let answer = collect_answer(provider.stream(&req).await.expect("stream"))
        .await
        .expect("answer");
    let edits: Vec<Edit> = answer
        .tool_calls
        .iter()
        .map(|c| match ToolRequest::from_call(c).expect("a known tool") {
            ToolRequest::Edit(e) => e,
            other => panic!("{other:?}"),
        })
        .collect();

    // Meanwhile the peer types at the top of the file; both changes must survive.
    peer.edit("App.tsx", &[TextEdit::insert(0, "// peer was here\n")])
        .expect("peer edit");

    let applied = apply_to_session(&me, &edits).expect("applied");
    assert_eq!(applied.len(), 2);
    let expected = format!(
        "// peer was here\n{}",
        APP.replace("{n} clicks", "{n} taps")
    );
    peer.wait_doc(T, "the AI edit", |d| {
        d.read("App.tsx").as_deref() == Some(expected.as_str()) && d.read("util.ts").is_some()
    })
    .await
    .expect("the peer sees the AI's edit and keeps its own");
    me.wait_doc(T, "the peer's edit", |d| {
        d.read("App.tsx").as_deref() == Some(expected.as_str())
    })
    .await
    .expect("converged");
    assert_eq!(
        peer.read("util.ts").as_deref(),
        Some("export const twice = (n: number) => 2 * n;\n")
    );
    me.close().await;
    peer.close().await;
    drop(server);
}
