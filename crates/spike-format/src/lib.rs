//! Formats TypeScript, TSX, JavaScript and JSX with `dprint-plugin-typescript`, configured to
//! match Prettier's defaults.
//!
//! ```
//! use spike_format::{format, FormatConfig};
//! let out = format("App.tsx", "const a = {b:1}", &FormatConfig::default())?;
//! assert_eq!(out.as_deref(), Some("const a = { b: 1 };\n"));
//! # Ok::<(), spike_format::FormatError>(())
//! ```
//!
//! The defaults are Prettier's (<https://prettier.io/docs/options>): 80 columns, 2 spaces, double
//! quotes unless that needs more escapes, semicolons, property quotes and braces as written, trailing commas in multi-line lists,
//! parentheses around every arrow parameter list, operators at the end of a broken line, and
//! imports kept in their order (sorting them could change the order of side effects). A project
//! overrides any of them, by dprint's property names (<https://dprint.dev/plugins/typescript/config/>),
//! in `spike.json` (`{"format": {…}}`) or `.spike/format.json` (`{…}`); see
//! [`FormatConfig::discover`].
//!
//! dprint alone is not always idempotent (a curried arrow with a return type re-wraps on a second
//! pass), so [`format`] formats until the text stops changing. Syntax errors come back as the same
//! [`Diagnostic`]s that `spike-transpile` reports, from the same parser.

use std::path::{Path, PathBuf};

use dprint_core::configuration::{resolve_global_config, ConfigKeyMap, ConfigKeyValue};
use dprint_plugin_typescript::configuration::{resolve_config, Configuration};
pub use spike_transpile::{Diagnostic, Severity};

/// How many passes [`format`] makes at most while looking for a fixed point.
const MAX_PASSES: usize = 4;

/// The deepest nesting [`format`] accepts. dprint keeps indentation levels in a `u8` and panics
/// past 255; a nesting level can cost more than one indentation level, hence the margin.
pub const MAX_NESTING: usize = 100;

/// A resolved formatter configuration. Cheap to clone; build once per project.
#[derive(Clone)]
pub struct FormatConfig {
    dprint: Configuration,
    /// Where the overrides came from, if a project file was found.
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for FormatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormatConfig")
            .field("line_width", &self.dprint.line_width)
            .field("indent_width", &self.dprint.indent_width)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a file could not be formatted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FormatError {
    /// The source does not parse; every syntax error found, in source order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Syntax(Vec<Diagnostic>),
    /// The file's extension is not one the formatter handles.
    #[error(
        "{file}: unsupported file type; expected one of .tsx .ts .mts .cts .jsx .js .mjs .cjs"
    )]
    UnsupportedExtension {
        /// The file name given.
        file: String,
    },
    /// The source nests deeper than [`MAX_NESTING`] levels.
    #[error("{file}:{line}:{column}: error: nesting is {depth} levels deep; the formatter handles at most {limit}")]
    TooDeep {
        /// The file name given.
        file: String,
        /// 1-based line where the deepest nesting starts.
        line: usize,
        /// 1-based column where the deepest nesting starts.
        column: usize,
        /// The nesting depth found.
        depth: usize,
        /// [`MAX_NESTING`].
        limit: usize,
    },
    /// The source is larger than [`spike_transpile::DEFAULT_MAX_SOURCE_BYTES`].
    #[error("{file}: {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file name given.
        file: String,
        /// Size of the source, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A configuration file has an unknown property or a bad value.
    #[error("{file}: {property}: {message}")]
    Config {
        /// The configuration file.
        file: String,
        /// The property as written in the file, e.g. `format.quoteStyle` in spike.json.
        property: String,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration file is not readable JSON.
    #[error("{file}:{line}:{column}: {message}")]
    ConfigSyntax {
        /// The configuration file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// The formatter's output would do something else than the source (a formatter bug); the
    /// source is left as it is.
    #[error("{file}: error: formatting would change what the program does, so the file is left as it is (please report it)")]
    ChangesProgram {
        /// The file name given.
        file: String,
    },
    /// The formatter failed on input that parses (a bug in the formatter, not in the source).
    #[error("{file}: the formatter failed: {message}")]
    Internal {
        /// The file name given.
        file: String,
        /// What failed.
        message: String,
    },
}

/// Prettier's defaults, in dprint's property names.
fn prettier_defaults() -> ConfigKeyMap {
    let s = |v: &str| ConfigKeyValue::String(v.into());
    let mut m = ConfigKeyMap::new();
    m.insert("lineWidth".into(), ConfigKeyValue::Number(80));
    m.insert("indentWidth".into(), ConfigKeyValue::Number(2));
    m.insert("useTabs".into(), ConfigKeyValue::Bool(false));
    m.insert("newLineKind".into(), s("lf"));
    m.insert("quoteStyle".into(), s("preferDouble"));
    m.insert("jsx.quoteStyle".into(), s("preferDouble"));
    // Prettier unquotes properties "as needed"; that changes the AST (a string key becomes an
    // identifier), so Spike keeps them as written and formatting never changes the program.
    m.insert("quoteProps".into(), s("preserve"));
    // "prefer": semicolons everywhere but after the last member of a one-line type literal.
    m.insert("semiColons".into(), s("prefer"));
    m.insert("trailingCommas".into(), s("onlyMultiLine"));
    m.insert("binaryExpression.operatorPosition".into(), s("sameLine"));
    m.insert(
        "conditionalExpression.operatorPosition".into(),
        s("nextLine"),
    );
    m.insert("conditionalType.operatorPosition".into(), s("nextLine"));
    m.insert("arrowFunction.useParentheses".into(), s("force"));
    m.insert("bracePosition".into(), s("sameLine"));
    // Prettier never adds or removes braces; dprint's default adds them around multi-line bodies.
    m.insert("useBraces".into(), s("maintain"));
    m.insert("nextControlFlowPosition".into(), s("sameLine"));
    m.insert("module.sortImportDeclarations".into(), s("maintain"));
    m.insert("module.sortExportDeclarations".into(), s("maintain"));
    m.insert("importDeclaration.sortNamedImports".into(), s("maintain"));
    m.insert("exportDeclaration.sortNamedExports".into(), s("maintain"));
    m
}

impl Default for FormatConfig {
    fn default() -> Self {
        // The defaults are ours and known to resolve without diagnostics (tested below).
        Self::from_overrides(ConfigKeyMap::new(), "<defaults>", "").unwrap_or_else(|_| {
            FormatConfig {
                dprint: dprint_plugin_typescript::configuration::ConfigurationBuilder::new()
                    .build(),
                source: None,
            }
        })
    }
}

impl FormatConfig {
    /// `prefix` is where the overrides sit in `file` (`format.` in spike.json), for error messages.
    fn from_overrides(
        overrides: ConfigKeyMap,
        file: &str,
        prefix: &str,
    ) -> Result<Self, FormatError> {
        let mut map = prettier_defaults();
        map.extend(overrides);
        let global = resolve_global_config(&mut map);
        let resolved = resolve_config(map, &global.config);
        if let Some(d) = global
            .diagnostics
            .into_iter()
            .chain(resolved.diagnostics)
            .next()
        {
            return Err(FormatError::Config {
                file: file.to_owned(),
                property: format!("{prefix}{}", d.property_name),
                message: d.message,
            });
        }
        // dprint accepts these and then breaks every line or indents nothing.
        for (property, value) in [
            ("lineWidth", resolved.config.line_width),
            ("indentWidth", u32::from(resolved.config.indent_width)),
        ] {
            if value == 0 {
                return Err(FormatError::Config {
                    file: file.to_owned(),
                    property: format!("{prefix}{property}"),
                    message: "must be at least 1".into(),
                });
            }
        }
        Ok(FormatConfig {
            dprint: resolved.config,
            source: None,
        })
    }

    /// Builds a configuration from a JSON object of overrides (dprint property names), e.g.
    /// `{"lineWidth": 100, "quoteStyle": "preferSingle"}`. `file` names the source in errors.
    ///
    /// # Errors
    /// [`FormatError::ConfigSyntax`] for invalid JSON, [`FormatError::Config`] for an unknown
    /// property or a bad value.
    pub fn from_json(json: &str, file: &str) -> Result<Self, FormatError> {
        let overrides: ConfigKeyMap = parse_json(json, file)?;
        Self::from_overrides(overrides, file, "")
    }

    /// Looks for `spike.json` (its `format` object) or `.spike/format.json` in `dir` and its
    /// ancestors, nearest first, and builds the configuration from the first one found; the
    /// defaults when there is none.
    ///
    /// # Errors
    /// As [`FormatConfig::from_json`], or [`FormatError::Config`] if the file cannot be read.
    pub fn discover(dir: &Path) -> Result<Self, FormatError> {
        for dir in dir.ancestors() {
            let spike_json = dir.join("spike.json");
            if spike_json.is_file() {
                let text = read(&spike_json)?;
                let name = spike_json.display().to_string();
                let mut root: ConfigKeyMap = parse_json(&text, &name)?;
                let overrides = match root.shift_remove("format") {
                    Some(ConfigKeyValue::Object(m)) => m,
                    None => continue,
                    Some(_) => {
                        return Err(FormatError::Config {
                            file: name,
                            property: String::new(),
                            message: "`format` must be an object".into(),
                        })
                    }
                };
                return Self::from_overrides(overrides, &name, "format.")
                    .map(|c| c.with_source(spike_json));
            }
            let format_json = dir.join(".spike").join("format.json");
            if format_json.is_file() {
                let name = format_json.display().to_string();
                return Self::from_json(&read(&format_json)?, &name)
                    .map(|c| c.with_source(format_json));
            }
        }
        Ok(Self::default())
    }

    fn with_source(mut self, path: PathBuf) -> Self {
        self.source = Some(path);
        self
    }

    /// The maximum line width in columns.
    pub fn line_width(&self) -> u32 {
        self.dprint.line_width
    }
}

fn read(path: &Path) -> Result<String, FormatError> {
    std::fs::read_to_string(path).map_err(|e| FormatError::Config {
        file: path.display().to_string(),
        property: String::new(),
        message: format!("cannot read: {e}"),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &str, file: &str) -> Result<T, FormatError> {
    serde_json::from_str(json).map_err(|e| FormatError::ConfigSyntax {
        file: file.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

/// Formats one file. `path` picks the language by its extension and names the file in errors.
///
/// Returns `Ok(None)` when the source is already formatted. The result is a fixed point:
/// formatting it again returns `Ok(None)`, and it is checked to be the same program as the source
/// ([`program_text`] of both is equal). A file containing `// dprint-ignore-file` is left alone.
///
/// # Errors
/// [`FormatError::Syntax`] with every syntax error (file, line, column, source line),
/// [`FormatError::UnsupportedExtension`], [`FormatError::TooLarge`] (the transpiler's limit, 16 MiB),
/// [`FormatError::TooDeep`], [`FormatError::ChangesProgram`], or [`FormatError::Internal`].
pub fn format(
    path: &str,
    source: &str,
    config: &FormatConfig,
) -> Result<Option<String>, FormatError> {
    if spike_transpile::SourceKind::from_path(path).is_none() {
        return Err(FormatError::UnsupportedExtension {
            file: path.to_owned(),
        });
    }
    if source.len() > spike_transpile::DEFAULT_MAX_SOURCE_BYTES {
        return Err(FormatError::TooLarge {
            file: path.to_owned(),
            size: source.len(),
            limit: spike_transpile::DEFAULT_MAX_SOURCE_BYTES,
        });
    }
    let internal = |message: String| FormatError::Internal {
        file: path.to_owned(),
        message,
    };
    // Parse with the transpiler's parser first: the same diagnostics as transpile, and dprint
    // never sees a file it would misread (seen: binary garbage that dprint turned into "").
    let check = spike_transpile::check_syntax(source, path).map_err(|e| internal(e.to_string()))?;
    if !check.errors.is_empty() {
        return Err(FormatError::Syntax(check.errors));
    }
    if check.nesting_depth > MAX_NESTING {
        let at = check
            .deepest
            .unwrap_or_else(|| Diagnostic::error_at(path, source, 0, ""));
        return Err(FormatError::TooDeep {
            file: path.to_owned(),
            line: at.line,
            column: at.column,
            depth: check.nesting_depth,
            limit: MAX_NESTING,
        });
    }
    let formatted = spike_transpile::with_large_stack(|| {
        let mut current: Option<String> = None;
        for _ in 0..MAX_PASSES {
            let text = current.as_deref().unwrap_or(source);
            match format_once(path, text, config) {
                Ok(None) => return Ok(current),
                Ok(Some(next)) => current = Some(next),
                Err(message) => return Err(internal(message)),
            }
        }
        // Still changing after MAX_PASSES: return the last pass, which is as stable as dprint gets.
        Ok(current)
    })
    .map_err(|m| internal(format!("the formatter failed on this input ({m})")))??;
    if let Some(out) = &formatted {
        ensure_same_program(path, source, out)?;
    }
    Ok(formatted)
}

/// The program as the transpiler sees it, without whitespace, comments or redundant parentheses;
/// two sources with the same program text do the same thing.
///
/// # Errors
/// Any [`spike_transpile::TranspileError`] of the source.
pub fn program_text(path: &str, source: &str) -> Result<String, spike_transpile::TranspileError> {
    let options = spike_transpile::TranspileOptions::new(path).with_minify_whitespace(true);
    spike_transpile::transpile(source, &options).map(|t| t.code)
}

/// Refuses a formatting that changes the program. dprint has been seen to do so: `- -x` printed
/// as `--x` (a decrement), and whitespace inside JSX text trimmed.
fn ensure_same_program(path: &str, before: &str, after: &str) -> Result<(), FormatError> {
    let changed = match (program_text(path, before), program_text(path, after)) {
        (Ok(a), Ok(b)) => a != b,
        // The source has semantic errors (duplicate exports, say): the output must at least have
        // the same ones.
        (Err(a), Err(b)) => a.diagnostics().len() != b.diagnostics().len(),
        _ => true,
    };
    if changed {
        return Err(FormatError::ChangesProgram {
            file: path.to_owned(),
        });
    }
    Ok(())
}

fn format_once(path: &str, text: &str, config: &FormatConfig) -> Result<Option<String>, String> {
    dprint_plugin_typescript::format_text(dprint_plugin_typescript::FormatTextOptions {
        path: Path::new(path),
        extension: None,
        text: text.to_owned(),
        config: &config.dprint,
        external_formatter: None,
    })
    .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_without_diagnostics() {
        let c = FormatConfig::from_overrides(ConfigKeyMap::new(), "<defaults>", "");
        assert!(c.is_ok(), "{:?}", c.err());
        assert_eq!(FormatConfig::default().line_width(), 80);
    }

    #[test]
    fn prettier_like_output() {
        let src = "import {b} from './b'\nimport a from 'a'\nexport const f = (x:number)=>({x, y:'s', z: [1,2,3]})\n";
        let out = format("m.ts", src, &FormatConfig::default()).ok().flatten();
        assert_eq!(
            out.as_deref(),
            Some(
                "import { b } from \"./b\";\nimport a from \"a\";\nexport const f = (x: number) => ({ x, y: \"s\", z: [1, 2, 3] });\n"
            )
        );
    }

    #[test]
    fn unknown_property_is_a_config_error_naming_it() {
        match FormatConfig::from_json(r#"{"lineWidht": 100}"#, "spike.json") {
            Err(FormatError::Config { property, .. }) => assert_eq!(property, "lineWidht"),
            other => panic!("expected a config error, got {other:?}"),
        }
        for zero in [r#"{"lineWidth": 0}"#, r#"{"indentWidth": 0}"#] {
            match FormatConfig::from_json(zero, "x.json") {
                Err(e @ FormatError::Config { .. }) => {
                    assert!(e.to_string().ends_with("Width: must be at least 1"), "{e}")
                }
                other => panic!("expected a config error for {zero}, got {other:?}"),
            }
        }
        match FormatConfig::from_json("{\n  \"lineWidth\": ,\n}", "x.json") {
            Err(FormatError::ConfigSyntax { line, column, .. }) => {
                assert_eq!((line, column), (2, 16))
            }
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_have_positions() {
        match format(
            "a.tsx",
            "const a = 1;\nconst b = 1 +;\n",
            &FormatConfig::default(),
        ) {
            Err(FormatError::Syntax(d)) => {
                assert_eq!(d[0].file, "a.tsx");
                assert_eq!((d[0].line, d[0].column), (2, 14));
                assert_eq!(d[0].source_line, "const b = 1 +;");
            }
            other => panic!("expected syntax errors, got {other:?}"),
        }
    }

    #[test]
    fn overrides_apply() {
        let c = FormatConfig::from_json(
            r#"{"quoteStyle": "alwaysSingle", "semiColons": "asi"}"#,
            "x",
        )
        .expect("valid config");
        let out = format("a.js", "const a = \"x\";\n", &c).ok().flatten();
        assert_eq!(out.as_deref(), Some("const a = 'x'\n"));
    }
}
