//! Bad input gets a clear error, never a panic or a stack overflow.

use spike_format::{format, FormatConfig, FormatError};

fn fmt(name: &str, src: &str) -> Result<Option<String>, FormatError> {
    format(name, src, &FormatConfig::default())
}

#[test]
fn empty_and_whitespace_only_files() {
    assert_eq!(fmt("e.ts", "").ok(), Some(None));
    assert_eq!(fmt("e.tsx", "\n\n  \n").ok(), Some(Some(String::new())));
}

#[test]
fn garbage_is_a_syntax_error_with_a_position() {
    let garbage: String = (0..4096u32)
        .map(|i| char::from_u32((i * 7919) % 0x7f).unwrap_or('x'))
        .collect();
    match fmt("junk.ts", &garbage) {
        Err(FormatError::Syntax(d)) => assert!(d[0].line >= 1 && d[0].file == "junk.ts"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn oversized_files_are_refused() {
    let big = "export const x = 1;\n".repeat(1_048_576);
    assert!(matches!(
        fmt("big.ts", &big),
        Err(FormatError::TooLarge {
            size: 20_971_520,
            ..
        })
    ));
}

#[test]
fn deeply_nested_jsx_is_refused_with_its_depth_and_place() {
    let depth = 10_000;
    let src = format!(
        "export const A = () =>\n  {}x{};\n",
        "<b>".repeat(depth),
        "</b>".repeat(depth)
    );
    match fmt("deep.tsx", &src) {
        Err(
            e @ FormatError::TooDeep {
                line: 2,
                column: 30_000,
                depth: 10_000,
                ..
            },
        ) => {
            assert!(
                e.to_string()
                    .starts_with("deep.tsx:2:30000: error: nesting is 10000 levels deep"),
                "{e}"
            );
        }
        other => panic!(
            "expected TooDeep, got {:?}",
            other.map(|o| o.map(|s| s.len()))
        ),
    }
    // Ordinary depth is formatted.
    let src = format!(
        "export const A = () => {}x{};\n",
        "<b>".repeat(40),
        "</b>".repeat(40)
    );
    assert!(matches!(fmt("ok.tsx", &src), Ok(Some(_))));
}

#[test]
fn unknown_extensions_are_refused() {
    assert!(matches!(
        fmt("a.css", "a{}"),
        Err(FormatError::UnsupportedExtension { .. })
    ));
}

#[test]
fn a_formatting_that_would_change_the_program_is_refused() {
    // dprint prints `- -x` as `--x`, a decrement: the file must be left alone, with an error.
    let src = "let x = 5;\nconst neg = - -x;\nconsole.log(neg, x);\n";
    match fmt("unary.ts", src) {
        Err(e @ FormatError::ChangesProgram { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("unary.ts: error: formatting would change"),
                "{e}"
            );
        }
        other => panic!("expected ChangesProgram, got {other:?}"),
    }
    // Whitespace inside JSX text is part of the element's children.
    let jsx = "export const A = () => <textarea>  two  spaces  </textarea>;\n";
    assert!(matches!(
        fmt("t.tsx", jsx),
        Err(FormatError::ChangesProgram { .. }) | Ok(None)
    ));
    // Binary minus before a negation is fine.
    assert_eq!(
        fmt("ok.ts", "let y = a - -b\n").ok(),
        Some(Some("let y = a - -b;\n".to_string()))
    );
}
