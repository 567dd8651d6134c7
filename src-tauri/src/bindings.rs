//! The UI's IPC types, generated from the Rust types with ts-rs: `ui/src/bindings.ts` is the
//! output of [`typescript`], so the shapes are written once. The test `bindings_are_current`
//! fails when the file is stale; `SPIKE_BLESS=1 cargo test -p spike-desktop bindings` rewrites it.

use ts_rs::TS;

/// The contents of `ui/src/bindings.ts`: every type the shell sends or receives over IPC, as
/// exported TypeScript declarations.
pub fn typescript() -> String {
    let decls = [
        spike_transpile::Severity::decl(),
        spike_transpile::Diagnostic::decl(),
        spike_collab::User::decl(),
        spike_collab::Selection::decl(),
        spike_collab::RoomLink::decl(),
        spike_preview::PreviewReport::decl(),
        crate::Peer::decl(),
        crate::ShellEvent::decl(),
        crate::ShareInfo::decl(),
        crate::SkippedFile::decl(),
        crate::MirrorInfo::decl(),
        crate::ProposedFile::decl(),
        crate::Proposal::decl(),
        crate::AiEvent::decl(),
        crate::keys::KeyStatus::decl(),
        crate::Figure::decl(),
        crate::Diagnostics::decl(),
        crate::settings::Settings::decl(),
        crate::error::ErrorReply::decl(),
    ];
    let mut out = String::from(
        "// Generated from the Rust types by src-tauri/src/bindings.rs (ts-rs). Do not edit:\n\
         // run `SPIKE_BLESS=1 cargo test -p spike-desktop bindings` after changing them.\n\n\
         /** A Yjs relative position in its JSON form (`Y.relativePositionToJSON`). */\n\
         export type RelativePositionJSON = Record<string, unknown>;\n",
    );
    for decl in decls {
        out.push_str("\nexport ");
        out.push_str(&decl);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_are_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/src/bindings.ts");
        let expected = typescript();
        if std::env::var_os("SPIKE_BLESS").is_some() {
            std::fs::write(&path, &expected).expect("writing ui/src/bindings.ts");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "ui/src/bindings.ts is stale: run `SPIKE_BLESS=1 cargo test -p spike-desktop bindings`"
        );
    }

    #[test]
    fn tagged_unions_and_numbers_come_out_as_the_ui_reads_them() {
        let ts = typescript();
        assert!(ts.contains(r#"{ "type": "diagnostics", "#), "{ts}");
        assert!(ts.contains("diagnostics: Array<Diagnostic>, }"), "{ts}");
        assert!(ts.contains("line: number"), "{ts}");
        assert!(ts.contains("lastRoom?: RoomLink"), "{ts}");
        assert!(
            !ts.contains("bigint"),
            "u64 ids must be numbers in JSON: {ts}"
        );
    }
}
