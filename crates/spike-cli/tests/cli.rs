//! The `spike` binary as a user runs it: real files in a temp folder, real exit codes.

use std::{path::Path, process::Command};

fn spike(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run spike");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn spike_stdin(args: &[&str], dir: &Path, input: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_spike"))
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run spike");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn one_file_prints_the_module_to_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "a.ts",
        "export const n: number = 1 as number;\n",
    );
    let (code, out, err) = spike(&["transpile", "a.ts"], dir.path());
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "export const n = 1;\n", "")
    );
}

#[test]
fn a_folder_goes_to_out_dir_respecting_gitignore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    write(
        &src,
        "App.tsx",
        "import { x } from './lib/x';\nexport default () => <p>{x}</p>;\n",
    );
    write(&src, "lib/x.ts", "export const x: string = 'x';\n");
    write(&src, "types.d.ts", "declare const y: number;\n");
    write(&src, "ignored/skip.ts", "this is not typescript\n");
    write(&src, ".gitignore", "ignored/\n");
    write(&src, "readme.md", "# not code\n");
    let (code, _, err) = spike(
        &[
            "transpile",
            "src",
            "--out-dir",
            "dist",
            "--sourcemap",
            "external",
        ],
        dir.path(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("transpiled 2 of 2 files"), "{err}");
    let app = std::fs::read_to_string(dir.path().join("dist/App.js")).expect("App.js");
    assert!(
        app.contains("from \"react/jsx-runtime\"")
            && app.ends_with("//# sourceMappingURL=App.js.map\n"),
        "{app}"
    );
    let map = std::fs::read_to_string(dir.path().join("dist/App.js.map")).expect("App.js.map");
    assert!(
        map.contains("\"sources\":[\"../src/App.tsx\"]") && map.contains("\"file\":\"App.js\""),
        "{map}"
    );
    let nested = std::fs::read_to_string(dir.path().join("dist/lib/x.js.map")).expect("x.js.map");
    assert!(
        nested.contains("\"sources\":[\"../../src/lib/x.ts\"]"),
        "{nested}"
    );
    assert!(dir.path().join("dist/lib/x.js").is_file());
    assert!(!dir.path().join("dist/ignored").exists());
    assert!(!dir.path().join("dist/types.js").exists());
}

#[test]
fn errors_are_printed_with_position_and_caret_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ok.ts", "export const a = 1;\n");
    write(
        dir.path(),
        "bad.tsx",
        "export const A = () => <div>{1 +}</div>;\n",
    );
    let (code, _, err) = spike(&["transpile", "."], dir.path());
    assert_eq!(code, 1);
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("./bad.tsx:1:33: error: "), "{err}");
    assert!(
        err.contains("\n  export const A = () => <div>{1 +}</div>;\n"),
        "{err}"
    );
    assert!(err.lines().nth(2).is_some_and(|l| l.trim() == "^"), "{err}");
    assert!(err.contains("transpiled 1 of 2 files"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(spike(&["transpile"], dir.path()).0, 2);
    assert_eq!(
        spike(&["transpile", "x.ts", "--target", "es5"], dir.path()).0,
        2
    );
    assert_eq!(spike(&["transpile", "missing.ts"], dir.path()).0, 2);
    assert_eq!(spike(&["frobnicate"], dir.path()).0, 2);
}

#[test]
fn unsupported_and_non_utf8_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "style.css", "body {}\n");
    let (code, _, err) = spike(&["transpile", "style.css"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("style.css: unsupported file type"), "{err}");
    std::fs::write(dir.path().join("bin.js"), b"\x00\xff\xfe").expect("write");
    let (code, _, err) = spike(&["transpile", "bin.js"], dir.path());
    assert_eq!(code, 1);
    assert!(
        err.contains("bin.js:1:2: error: the file is not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn fmt_check_lists_files_and_fmt_rewrites_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "ugly.ts", "const a = {b:1}\n");
    write(dir.path(), "fine.ts", "const a = { b: 1 };\n");
    let (code, out, _) = spike(&["fmt", "--check", "."], dir.path());
    assert_eq!((code, out.as_str()), (1, "./ugly.ts\n"));
    let (code, _, err) = spike(&["fmt", "."], dir.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ugly.ts")).expect("read"),
        "const a = { b: 1 };\n"
    );
    assert_eq!(spike(&["fmt", "--check", "."], dir.path()).0, 0);
}

#[test]
fn fmt_reads_the_project_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "spike.json",
        r#"{"format": {"quoteStyle": "alwaysSingle", "indentWidth": 4}}"#,
    );
    write(dir.path(), "src/a.ts", "if (x) {\ny = \"s\"\n}\n");
    let (code, out, err) = spike_stdin(
        &["fmt", "--stdin-filepath", "src/a.ts"],
        dir.path(),
        "if (x) {\ny = \"s\"\n}\n",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "if (x) {\n    y = 's';\n}\n"),
        "{err}"
    );

    write(dir.path(), ".spike/format.json", "{}");
    write(dir.path(), "spike.json", r#"{"format": {"lineWdth": 100}}"#);
    let (code, _, err) = spike(&["fmt", "--check", "src"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("spike.json: format.lineWdth:"), "{err}");
}

#[test]
fn fmt_stdin_reports_syntax_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = spike_stdin(
        &["fmt", "--stdin-filepath", "x.tsx"],
        dir.path(),
        "let a = 1 +;\n",
    );
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with("x.tsx:1:12: error: Expression expected"),
        "{err}"
    );
}

#[test]
fn example_writes_transpiles_and_checks_the_project() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = spike(&["example", "proj"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fmt --check: 6 of 6 files formatted"), "{out}");
    let app = std::fs::read_to_string(dir.path().join("proj/dist/App.js")).expect("App.js");
    assert!(app.contains("//# sourceMappingURL=data:application/json;base64,"));
    assert!(dir.path().join("proj/dist/components/Counter.js").is_file());
}

#[test]
fn out_dir_never_overwrites_inputs_or_writes_one_output_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "src/comp.js", "export const x = 1;\n");
    let (code, _, err) = spike(&["transpile", "src", "--out-dir", "src"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("would overwrite the input file"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("src/comp.js")).expect("read"),
        "export const x = 1;\n"
    );
    write(dir.path(), "two/a.ts", "export const a = 1;\n");
    write(dir.path(), "two/a.tsx", "export const b = 2;\n");
    let (code, _, err) = spike(&["transpile", "two", "--out-dir", "out"], dir.path());
    assert_eq!(code, 1);
    assert!(err.contains("would both be written to out/a.js"), "{err}");
    assert!(!dir.path().join("out").exists());
}

#[test]
fn an_unreadable_folder_is_one_error_not_the_end_of_the_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "mix/ok.ts", "export const a: number = 1;\n");
    write(dir.path(), "mix/locked/b.ts", "export const b = 2;\n");
    let locked = dir.path().join("mix/locked");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // Root reads everything: only a real permission failure can be tested as another user.
    let readable = std::fs::read_dir(&locked).is_ok();
    let (code, _, err) = spike(&["transpile", "mix", "--out-dir", "out"], dir.path());
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(dir.path().join("out/ok.js").is_file(), "{err}");
    if readable {
        assert_eq!(code, 0, "{err}");
    } else {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("Permission denied"), "{err}");
    }
}
