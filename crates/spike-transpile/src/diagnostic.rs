//! The diagnostic shape shared by transpile and format errors.

use std::fmt;

use serde::Serialize;

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be transpiled (or formatted) until this is fixed.
    Error,
    /// The output is produced, but probably not what the author meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One message about a place in a source file.
///
/// Positions are 1-based. `column` counts Unicode scalar values (characters) from the start of the
/// line, as editors and `tsc` display them. `source_line` is the text of that line without its line
/// terminator, so a reader can show the line with a caret under the column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in a sentence a person can act on.
    pub message: String,
    /// The file name given to the transpiler or formatter.
    pub file: String,
    /// 1-based line number.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub line: usize,
    /// 1-based column, in characters.
    #[cfg_attr(feature = "ts", ts(type = "number"))]
    pub column: usize,
    /// The text of the offending line (empty when the position is the end of the file).
    pub source_line: String,
}

impl Diagnostic {
    /// Builds an error diagnostic at a 0-based byte offset of `source`.
    ///
    /// Offsets past the end or inside a character are clamped to the nearest valid position.
    pub fn error_at(
        file: &str,
        source: &str,
        byte_offset: usize,
        message: impl Into<String>,
    ) -> Self {
        let offset = floor_char_boundary(source, byte_offset.min(source.len()));
        let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[offset..]
            .find('\n')
            .map_or(source.len(), |i| offset + i);
        let line = source[..line_start].matches('\n').count() + 1;
        let column = source[line_start..offset].chars().count() + 1;
        // One diagnostic is one line of text plus the source line: escape line breaks in the
        // message and show control characters of the source as U+FFFD.
        let message: String = message.into();
        let source_line = source[line_start..line_end]
            .trim_end_matches('\r')
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    '\u{fffd}'
                } else {
                    c
                }
            })
            .collect();
        Diagnostic {
            severity: Severity::Error,
            message: message.replace('\r', "\\r").replace('\n', "\\n"),
            file: file.to_owned(),
            line,
            column,
            source_line,
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders `file:line:col: severity: message`, then the source line and a caret under the column.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )?;
        if !self.source_line.is_empty() {
            let pad: String = self
                .source_line
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n  {}\n  {}^", self.source_line, pad)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let src = "let a = 1;\nconst é = \"x\" + ;\n";
        let at = src.find(" ;").map(|i| i + 1).unwrap_or_default();
        let d = Diagnostic::error_at("a.ts", src, at, "Expression expected");
        assert_eq!((d.line, d.column), (2, 17));
        assert_eq!(d.source_line, "const é = \"x\" + ;");
        assert_eq!(
            d.to_string(),
            "a.ts:2:17: error: Expression expected\n  const é = \"x\" + ;\n                  ^"
        );
    }

    #[test]
    fn messages_and_source_lines_stay_on_one_line() {
        let d = Diagnostic::error_at("a.ts", "a\u{0}b\u{7}c", 2, "got 'x\n'");
        assert_eq!(d.message, "got 'x\\n'");
        assert_eq!(d.source_line, "a\u{fffd}b\u{fffd}c");
    }

    #[test]
    fn offset_at_end_of_file_is_valid() {
        let d = Diagnostic::error_at("a.ts", "abc", 99, "Unexpected end of file");
        assert_eq!((d.line, d.column, d.source_line.as_str()), (1, 4, "abc"));
    }
}
