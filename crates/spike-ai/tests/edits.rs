//! Code-editing tool calls: validated against a room and applied as CRDT edits, and an AI edit
//! reaching a second client through a real spike-server on loopback.

mod common;

use std::time::Duration;

use common::{request, Reply, Server};
use serde_json::json;
use spike_ai::{
    apply_to_doc, apply_to_session, collect_answer, editing_tools, plan_edits, Edit, EditError,
    FileChange, OpenAi, Provider as _, ToolCall, ToolRequest,
};
use spike_collab::{RoomDoc, Session, SessionConfig, TextEdit};
use spike_server::{Server as RoomServer, ServerConfig};

const APP: &str = "import { useState } from \"react\";\n\
export default function App() {\n  \
  const [n, setN] = useState(0);\n  \
  return <button onClick={() => setN(n + 1)}>{n} clicks 👋</button>;\n\
}\n";

fn room() -> RoomDoc {
    let doc = RoomDoc::new();
    doc.create_file("App.tsx", APP).expect("create");
    doc
}

fn search(path: &str, search: &str, replace: &str) -> Edit {
    Edit::SearchReplace {
        path: path.to_owned(),
        search: search.to_owned(),
        replace: replace.to_owned(),
    }
}

#[test]
fn a_search_replace_becomes_a_minimal_edit_not_a_rewrite() {
    let doc = room();
    let plan = plan_edits(&doc, &[search("App.tsx", "clicks 👋", "taps 👋")]).expect("plan");
    let [FileChange::Edit { path, edits }] = plan.as_slice() else {
        panic!("{plan:?}");
    };
    assert_eq!(path, "App.tsx");
    let inserted: usize = edits.iter().map(|e| e.insert.len()).sum();
    let deleted: u32 = edits.iter().map(|e| e.delete).sum();
    assert!(inserted <= 4 && deleted <= 6, "{edits:?}");
    apply_to_doc(&doc, &[search("App.tsx", "clicks 👋", "taps 👋")]).expect("apply");
    assert_eq!(
        doc.read("App.tsx").as_deref(),
        Some(APP.replace("clicks", "taps").as_str())
    );
}

#[test]
fn replace_range_checks_the_lines_it_replaces() {
    let doc = room();
    let edit = Edit::ReplaceRange {
        path: "App.tsx".to_owned(),
        start_line: 3,
        end_line: 3,
        old_text: "  const [n, setN] = useState(0);".to_owned(),
        new_text: "  const [n, setN] = useState(10);".to_owned(),
    };
    apply_to_doc(&doc, std::slice::from_ref(&edit)).expect("apply");
    assert_eq!(
        doc.read("App.tsx").as_deref(),
        Some(APP.replace("useState(0)", "useState(10)").as_str())
    );
    // The same edit again: line 3 no longer reads as the model expects.
    let err = apply_to_doc(&doc, &[edit]).expect_err("stale");
    assert!(
        matches!(
            &err,
            EditError::StaleRange {
                start_line: 3,
                end_line: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let outside = Edit::ReplaceRange {
        path: "App.tsx".to_owned(),
        start_line: 5,
        end_line: 9,
        old_text: "}".to_owned(),
        new_text: String::new(),
    };
    let err = apply_to_doc(&doc, &[outside]).expect_err("outside");
    assert!(err.to_string().contains("has 5 lines"), "{err}");
}

#[test]
fn refused_edits_are_typed_and_a_failing_batch_applies_nothing() {
    let doc = room();
    let before = doc.read("App.tsx");
    type Expect = fn(&EditError) -> bool;
    let cases: Vec<(Vec<Edit>, Expect)> = vec![
        (vec![search("App.tsx", "no such text", "x")], |e| {
            matches!(e, EditError::SearchNotFound { .. })
        }),
        (
            vec![search("App.tsx", "n", "m")],
            |e| matches!(e, EditError::SearchAmbiguous { count, .. } if *count > 1),
        ),
        (
            vec![search("Missing.tsx", "a", "b")],
            |e| matches!(e, EditError::NoSuchFile { path } if path == "Missing.tsx"),
        ),
        (
            vec![Edit::CreateFile {
                path: "App.tsx".to_owned(),
                content: "x".to_owned(),
            }],
            |e| matches!(e, EditError::FileExists { path } if path == "App.tsx"),
        ),
        (
            vec![Edit::CreateFile {
                path: "../escape.ts".to_owned(),
                content: "x".to_owned(),
            }],
            |e| matches!(e, EditError::Room(_)),
        ),
        // The first edit is fine, the second is not: neither is applied.
        (
            vec![
                search("App.tsx", "clicks", "taps"),
                search("App.tsx", "clicks", "taps"),
            ],
            |e| matches!(e, EditError::SearchNotFound { .. }),
        ),
    ];
    for (edits, expected) in cases {
        let err = apply_to_doc(&doc, &edits).expect_err("refused");
        assert!(expected(&err), "{edits:?} gave {err:?}");
    }
    assert_eq!(doc.read("App.tsx"), before);
    assert_eq!(doc.paths(), ["App.tsx"]);
}

#[test]
fn tool_calls_become_requests_or_name_what_is_wrong() {
    let call = |name: &str, arguments| ToolCall {
        id: "call_1".to_owned(),
        name: name.to_owned(),
        arguments,
    };
    assert_eq!(
        ToolRequest::from_call(&call("read_file", json!({"path": "App.tsx"}))).expect("read"),
        ToolRequest::Read {
            path: "App.tsx".to_owned()
        }
    );
    assert_eq!(
        ToolRequest::from_call(&call(
            "create_file",
            json!({"path": "a.ts", "content": "x"})
        ))
        .expect("create"),
        ToolRequest::Edit(Edit::CreateFile {
            path: "a.ts".to_owned(),
            content: "x".to_owned()
        })
    );
    let err = ToolRequest::from_call(&call("replace_range", json!({"path": "a.ts"})))
        .expect_err("missing fields");
    assert!(
        matches!(&err, EditError::BadArguments { tool, detail } if tool == "replace_range" && detail.contains("start_line")),
        "{err:?}"
    );
    let err = ToolRequest::from_call(&call("rm_rf", json!({}))).expect_err("unknown");
    assert!(matches!(err, EditError::UnknownTool { name } if name == "rm_rf"));
    let names: Vec<String> = editing_tools().into_iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "read_file",
            "replace_range",
            "search_replace",
            "create_file"
        ]
    );
}

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

#[test]
fn replace_range_keeps_crlf_line_endings() {
    let doc = RoomDoc::new();
    doc.create_file("win.ts", "let a = 1;\r\nlet b = 2;\r\n")
        .expect("create");
    let edit = Edit::ReplaceRange {
        path: "win.ts".to_owned(),
        start_line: 1,
        end_line: 1,
        old_text: "let a = 1;".to_owned(),
        new_text: "let a = 10;".to_owned(),
    };
    apply_to_doc(&doc, &[edit]).expect("apply");
    assert_eq!(
        doc.read("win.ts").as_deref(),
        Some("let a = 10;\r\nlet b = 2;\r\n")
    );
}
