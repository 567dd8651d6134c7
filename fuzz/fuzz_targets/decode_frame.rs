//! Whatever bytes arrive as a y-websocket frame, or as an update from a log, decoding and
//! applying them returns: no stack overflow (deep nesting), no reservation the bytes do not
//! justify (declared counts; libFuzzer's malloc limit reports one), and no panic at all, not
//! even one that `RoomDoc::apply_update`'s guard would catch (updates are applied as a room
//! applies them, with `apply_update_in_order`): a panic inside yrs leaves its
//! transaction half done, and dropping it then can touch freed memory. libfuzzer-sys's panic
//! hook aborts on every panic, so each is reported.
//!
//! With `SPIKE_FUZZ_SEEDS=<folder>` it first writes real frames made by the engine there (sync
//! step 1 and 2, updates of every kind of edit, awareness), for libFuzzer to start from.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use spike_collab::yrs::sync::{Awareness, Message, SyncMessage};
use spike_collab::yrs::{Any, Map, Transact};
use spike_collab::{bounds, protocol, CollabError, Presence, RoomDoc, TextEdit, User};

/// Writes the seed frames into `dir`.
fn seeds(dir: &Path) -> Result<usize, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let doc = RoomDoc::with_client_id(77);
    let mut frames = Vec::new();
    let mut update = |u: Option<Vec<u8>>| {
        if let Some(u) = u {
            frames.push(protocol::update(u.clone()));
            frames.push(protocol::sync_step2(u));
        }
    };
    update(doc.create_file("App.tsx", "export default () => <p>hi 👋</p>;\n")?);
    update(doc.edit(
        "App.tsx",
        &[TextEdit::insert(3, "«»"), TextEdit::delete(0, 2)],
    )?);
    update(doc.set_meta("packages", r#"{"react":"19"}"#));
    update(doc.rename_file("App.tsx", "src/App.tsx")?);
    update(doc.create_file("b.ts", "x")?);
    update(doc.delete_file("b.ts")?);
    {
        let map = doc.doc().get_or_insert_map("other");
        let mut txn = doc.doc().transact_mut();
        map.insert(
            &mut txn,
            "v",
            Any::from_json(r#"{"a":[1,2.5,"s",true,null,{"b":[[]]}]}"#)?,
        );
        map.insert(&mut txn, "bytes", Any::from(vec![1u8, 2, 3]));
    }
    frames.push(protocol::sync_step2(doc.encode_state()));
    frames.push(protocol::sync_step1(&doc.state_vector()));
    let mut awareness = Awareness::new(doc.doc().clone());
    awareness.set_local_state(&Presence {
        user: User {
            name: "seed".into(),
            color: "#123456".into(),
        },
        ..Presence::default()
    })?;
    frames.push(protocol::awareness(awareness.update()?));
    frames.push(protocol::query_awareness());
    for (i, frame) in frames.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), frame)?;
    }
    Ok(frames.len())
}

fuzz_target!(
    init: {
        if let Some(dir) = std::env::var_os("SPIKE_FUZZ_SEEDS") {
            match seeds(Path::new(&dir)) {
                Ok(n) => eprintln!("wrote {n} seed frames"),
                Err(e) => {
                    eprintln!("could not write the seed frames: {e}");
                    std::process::exit(2);
                }
            }
        }
    },
    |data: &[u8]| {
    if let Ok(messages) = protocol::decode_frame(data) {
        let mut doc = RoomDoc::with_client_id(1);
        for message in messages {
            match message {
                // As a room applies what a peer sends: after yrs fails part-way through an
                // update the room never touches that document again, it loads a new one.
                Message::Sync(SyncMessage::SyncStep2(u) | SyncMessage::Update(u)) => {
                    if let Err(CollabError::Apply(_)) = doc.apply_update_in_order(&u) {
                        doc = RoomDoc::with_client_id(1);
                    }
                }
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let _ = doc.encode_diff(&sv);
                }
                _ => {}
            }
        }
    }
    let _ = bounds::check_state_vector_v1(data);
    let doc = RoomDoc::with_client_id(2);
    let _ = doc.apply_update_in_order(data);
});
