//! TypeScript, TSX, JSX and JavaScript in; a runnable ES module, its source map, its diagnostics
//! and its import list out.
//!
//! ```
//! use spike_transpile::{transpile, TranspileOptions};
//! let out = transpile(
//!     "export const App = (p: { n: number }) => <b>{p.n}</b>;",
//!     &TranspileOptions::new("App.tsx"),
//! )?;
//! assert!(out.code.contains("react/jsx-runtime"));
//! assert_eq!(out.imports[0].specifier, "react/jsx-runtime");
//! # Ok::<(), spike_transpile::TranspileError>(())
//! ```
//!
//! The pipeline is swc's: parse (recovering where it can, every error reported), Spike's own checks
//! (duplicate exports, parameter decorators), resolver, members of merged namespaces qualified
//! (`merged_namespaces`), TypeScript strip (enums and `const enum` values inlined, namespaces,
//! parameter properties, `satisfies`, type-only imports erased), decorators and `accessor` fields
//! lowered (and applied in TypeScript's order, `decorator_compat`), JSX (automatic or classic
//! runtime, with pragmas), lowering to the target edition, helpers inlined, hygiene, fixer, code
//! generation. Plain JavaScript that needs none of these goes straight from parser to code
//! generator.
//!
//! # Why `swc_core` is pinned with `=`
//! `spike-format` formats with `dprint-plugin-typescript`, which parses with swc through
//! `deno_ast`. Two versions of the swc crates in one build would double the compile time and the
//! binary, and their ASTs could not be shared. `swc_core = "=48.0.4"` resolves to exactly the swc
//! crates that `dprint-plugin-typescript = "=0.96.1"` uses (through `deno_ast 0.53.3`);
//! `cargo xtask check-swc` (part of `cargo xtask test`) fails if the build ever holds two.

mod checks;
mod decorator_compat;
mod diagnostic;
mod imports;
mod merged_namespaces;
mod options;
mod pipeline;

pub use diagnostic::{Diagnostic, Severity};
pub use imports::{Import, ImportKind, ImportStatement};
pub use options::{
    Decorators, JsxRuntime, SourceKind, SourceMapMode, Target, TranspileOptions, UnknownTarget,
    DEFAULT_MAX_SOURCE_BYTES, EXTENSIONS,
};

/// The result of a successful [`transpile`].
#[derive(Debug, Clone)]
pub struct Transpiled {
    /// The ES module. With [`SourceMapMode::Inline`] it ends with the map as a data URL; with
    /// [`SourceMapMode::External`] with a `sourceMappingURL` comment naming `<output>.map`.
    pub code: String,
    /// The source map as JSON (Source Map Revision 3) with `sourcesContent`, for
    /// [`SourceMapMode::External`]; `None` otherwise.
    pub source_map: Option<String>,
    /// The modules the output imports at run time, in source order.
    pub imports: Vec<Import>,
    /// Warnings; errors make the result an `Err`.
    pub diagnostics: Vec<Diagnostic>,
}

/// Why a file could not be transpiled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TranspileError {
    /// The source has syntax or semantic errors; every one found is listed, in source order.
    #[error("{}", render(.0))]
    Diagnostics(Vec<Diagnostic>),
    /// The file's extension is not one of [`EXTENSIONS`].
    #[error(
        "{file}: unsupported file type; expected one of .tsx .ts .mts .cts .jsx .js .mjs .cjs"
    )]
    UnsupportedExtension {
        /// The file name given.
        file: String,
    },
    /// The source is larger than [`TranspileOptions::max_source_bytes`].
    #[error("{file}: {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file name given.
        file: String,
        /// Size of the source, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The bytes are not UTF-8 text (binary data, or another encoding).
    #[error(
        "{file}:{line}:{column}: error: the file is not valid UTF-8 text (byte offset {offset})"
    )]
    InvalidUtf8 {
        /// The file name given.
        file: String,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in characters) of the first invalid byte.
        column: usize,
        /// 0-based byte offset of the first invalid byte.
        offset: usize,
    },
    /// swc failed on this input (a bug in the transpiler, not in the source).
    #[error("{file}: internal error: {message}")]
    Internal {
        /// The file name given.
        file: String,
        /// What failed.
        message: String,
    },
}

impl TranspileError {
    /// The diagnostics of this error: the list for [`TranspileError::Diagnostics`], one diagnostic
    /// for the others.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            TranspileError::Diagnostics(d) => d.clone(),
            TranspileError::InvalidUtf8 {
                file, line, column, ..
            } => vec![Diagnostic {
                severity: Severity::Error,
                message: "the file is not valid UTF-8 text".into(),
                file: file.clone(),
                line: *line,
                column: *column,
                source_line: String::new(),
            }],
            other => vec![Diagnostic {
                severity: Severity::Error,
                message: other.to_string(),
                file: match other {
                    TranspileError::UnsupportedExtension { file }
                    | TranspileError::TooLarge { file, .. }
                    | TranspileError::Internal { file, .. } => file.clone(),
                    _ => String::new(),
                },
                line: 1,
                column: 1,
                source_line: String::new(),
            }],
        }
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Transpiles one module.
///
/// The language is chosen by `options.file_name`'s extension. Never panics: malformed input is a
/// [`TranspileError::Diagnostics`], and a failure inside swc is a [`TranspileError::Internal`].
/// Runs on a helper thread with a large stack, so deeply nested input (10,000 levels of JSX) does
/// not overflow the caller's stack.
///
/// # Errors
/// See [`TranspileError`].
pub fn transpile(source: &str, options: &TranspileOptions) -> Result<Transpiled, TranspileError> {
    pipeline::run(source, options)
}

/// Parses `source` (the language chosen by `file_name`'s extension) without transforming it:
/// every syntax error the parser finds, in source order, and the deepest nesting.
///
/// # Errors
/// [`TranspileError::UnsupportedExtension`], or [`TranspileError::Internal`] if the parser failed.
pub fn check_syntax(source: &str, file_name: &str) -> Result<SyntaxCheck, TranspileError> {
    pipeline::check_syntax(source, file_name)
}

pub use pipeline::{with_large_stack, SyntaxCheck};

/// Like [`transpile`], for bytes read from a file: checks that they are UTF-8 first.
///
/// # Errors
/// [`TranspileError::InvalidUtf8`] with the position of the first invalid byte, or any error of
/// [`transpile`].
pub fn transpile_bytes(
    bytes: &[u8],
    options: &TranspileOptions,
) -> Result<Transpiled, TranspileError> {
    let source = decode_utf8(&options.file_name, bytes)?;
    transpile(source, options)
}

/// Checks that `bytes` are UTF-8 and returns them as text.
///
/// # Errors
/// [`TranspileError::InvalidUtf8`] naming the line, column and byte offset of the first invalid byte.
pub fn decode_utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, TranspileError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        // The prefix up to `valid_up_to` is valid UTF-8 by definition.
        let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let d = Diagnostic::error_at(file, valid, offset, "");
        TranspileError::InvalidUtf8 {
            file: file.to_owned(),
            line: d.line,
            column: d.column,
            offset,
        }
    })
}

/// The name of the output for a source file: `.ts`, `.tsx`, `.jsx` and `.js` become `.js`,
/// `.mts` and `.mjs` become `.mjs`, `.cts` and `.cjs` become `.cjs`; other names get `.js` appended.
pub fn output_file_name(file_name: &str) -> String {
    let Some((stem, ext)) = file_name.rsplit_once('.') else {
        return format!("{file_name}.js");
    };
    if stem.is_empty() || stem.ends_with('/') {
        return format!("{file_name}.js");
    }
    let stem = stem.strip_suffix(".d").unwrap_or(stem);
    match ext.to_ascii_lowercase().as_str() {
        "ts" | "tsx" | "jsx" | "js" => format!("{stem}.js"),
        "mts" | "mjs" => format!("{stem}.mjs"),
        "cts" | "cjs" => format!("{stem}.cjs"),
        _ => format!("{file_name}.js"),
    }
}
