//! Code-editing tool calls: validated against a room and applied as CRDT edits. (An AI edit
//! reaching a second client through a real room server is spike-server's test
//! `tests/ai_edits.rs`: the server sits above this crate, so these tests may not depend on it.)

use serde_json::json;
use spike_ai::{
    apply_to_doc, editing_tools, plan_edits, Edit, EditError, FileChange, ToolCall, ToolRequest,
};
use spike_collab::RoomDoc;

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
