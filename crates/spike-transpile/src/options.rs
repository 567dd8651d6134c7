//! What a caller can ask of the transpiler.

use std::{fmt, str::FromStr};

use serde::Serialize;

/// The language of a source file, chosen from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SourceKind {
    /// `.ts`, `.mts`, `.cts`: TypeScript without JSX.
    TypeScript,
    /// `.tsx`: TypeScript with JSX.
    Tsx,
    /// `.js`, `.mjs`, `.cjs`, `.jsx`: JavaScript; JSX is accepted in all of them, as Babel and
    /// most React toolchains do.
    JavaScript,
}

impl SourceKind {
    /// The kind for a file name's extension (case-insensitive), or `None` for an extension Spike
    /// does not transpile. Type declaration files (`.d.ts`) are TypeScript.
    pub fn from_path(path: &str) -> Option<SourceKind> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "ts" | "mts" | "cts" => Some(SourceKind::TypeScript),
            "tsx" => Some(SourceKind::Tsx),
            "js" | "mjs" | "cjs" | "jsx" => Some(SourceKind::JavaScript),
            _ => None,
        }
    }

    /// True for a TypeScript declaration file (`.d.ts`, `.d.mts`, `.d.cts`, or `.d.<ext>.ts`):
    /// it is checked for syntax but has no run-time code.
    pub fn is_declaration_file(path: &str) -> bool {
        let lower = path.to_ascii_lowercase();
        let name = lower.rsplit('/').next().unwrap_or(&lower);
        name.ends_with(".d.ts")
            || name.ends_with(".d.mts")
            || name.ends_with(".d.cts")
            || (name.ends_with(".ts") && name.contains(".d."))
    }

    /// True for TypeScript and TSX.
    pub fn is_typescript(self) -> bool {
        matches!(self, SourceKind::TypeScript | SourceKind::Tsx)
    }
}

/// The file extensions [`SourceKind::from_path`] accepts, without the dot.
pub const EXTENSIONS: &[&str] = &["tsx", "ts", "mts", "cts", "jsx", "js", "mjs", "cjs"];

/// How JSX is compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsxRuntime {
    /// React 17+'s automatic runtime: `jsx()`/`jsxs()` imported from
    /// `<import_source>/jsx-runtime` (the default, with `import_source` = `react`).
    /// A `/** @jsxImportSource pkg */` pragma in the file overrides the import source.
    Automatic {
        /// The package that provides `jsx-runtime`.
        import_source: String,
    },
    /// The classic runtime: `factory(type, props, ...children)`. A `/** @jsx h */` or
    /// `/** @jsxFrag Fragment */` pragma in the file overrides the factories, and the import that
    /// provides the factory is kept even though the source only uses it in JSX.
    Classic {
        /// The element factory, e.g. `React.createElement` or `h`.
        factory: String,
        /// The fragment factory, e.g. `React.Fragment` or `Fragment`.
        fragment_factory: String,
    },
}

impl Default for JsxRuntime {
    fn default() -> Self {
        JsxRuntime::Automatic {
            import_source: "react".into(),
        }
    }
}

/// The ECMAScript version the output must run on. Syntax newer than the target is lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Target {
    /// ES2018, the oldest target: swc cannot lower ES2018's async generators and `for await`, so
    /// an older target would emit syntax it does not run.
    Es2018,
    /// ES2019.
    Es2019,
    /// ES2020.
    Es2020,
    /// ES2021.
    Es2021,
    /// ES2022, the level current WebKit runs (the default). Decorators and `accessor` fields are
    /// lowered.
    #[default]
    Es2022,
    /// The newest syntax swc knows; decorators and `accessor` fields are still lowered, since no
    /// engine this output runs on supports them yet.
    EsNext,
}

impl Target {
    /// All targets, oldest first.
    pub const ALL: [Target; 6] = [
        Target::Es2018,
        Target::Es2019,
        Target::Es2020,
        Target::Es2021,
        Target::Es2022,
        Target::EsNext,
    ];

    /// The lowercase name used on the command line, e.g. `es2022`.
    pub fn name(self) -> &'static str {
        match self {
            Target::Es2018 => "es2018",
            Target::Es2019 => "es2019",
            Target::Es2020 => "es2020",
            Target::Es2021 => "es2021",
            Target::Es2022 => "es2022",
            Target::EsNext => "esnext",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Returned when a target name is not one of [`Target::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown target `{0}`: expected one of es2018, es2019, es2020, es2021, es2022, esnext")]
pub struct UnknownTarget(pub String);

impl FromStr for Target {
    type Err = UnknownTarget;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownTarget(s.to_owned()))
    }
}

/// Whether and how a source map is produced (Source Map Revision 3, <https://tc39.es/ecma426/>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceMapMode {
    /// No source map.
    #[default]
    None,
    /// Appended to the code as a `//# sourceMappingURL=data:application/json;base64,…` comment.
    Inline,
    /// Returned separately in [`crate::Transpiled::source_map`]; the code ends with a
    /// `//# sourceMappingURL=<file>.map` comment.
    External,
}

/// Which decorator semantics apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Decorators {
    /// TC39 standard decorators (TypeScript 5's default), lowered to the 2022-03 proposal's
    /// runtime and applied in TypeScript's order. Parameter decorators do not exist in this
    /// proposal and are an error. Unlike TypeScript, initializers that field and accessor
    /// decorators add with `addInitializer` run before the fields are defined, with those of the
    /// methods.
    #[default]
    Standard,
    /// TypeScript's `experimentalDecorators`, including parameter decorators.
    Legacy {
        /// TypeScript's `emitDecoratorMetadata`.
        emit_metadata: bool,
    },
}

/// Options for [`crate::transpile`]; build with [`TranspileOptions::new`] and the `with_*`
/// methods.
#[derive(Debug, Clone)]
pub struct TranspileOptions {
    /// The file name used to pick the language (by extension), in diagnostics and in the source map.
    pub file_name: String,
    /// How JSX is compiled.
    pub jsx: JsxRuntime,
    /// The ECMAScript version of the output.
    pub target: Target,
    /// Source map output.
    pub source_map: SourceMapMode,
    /// How the source map's `sources` names the source; `file_name` when `None`. Source maps
    /// resolve it relative to the map, so a writer of `dist/a.js.map` for `src/a.ts` passes
    /// `../src/a.ts`.
    pub source_map_source: Option<String>,
    /// Decorator semantics.
    pub decorators: Decorators,
    /// Emit without insignificant whitespace and comments (used to compare programs).
    pub minify_whitespace: bool,
    /// Sources larger than this many bytes are refused with [`crate::TranspileError::TooLarge`].
    pub max_source_bytes: usize,
}

/// The default for [`TranspileOptions::max_source_bytes`]: 16 MiB.
pub const DEFAULT_MAX_SOURCE_BYTES: usize = 16 * 1024 * 1024;

impl TranspileOptions {
    /// Defaults for `file_name`: automatic JSX from `react`, ES2022, no source map, standard
    /// decorators, a 16 MiB size limit.
    pub fn new(file_name: impl Into<String>) -> Self {
        TranspileOptions {
            file_name: file_name.into(),
            jsx: JsxRuntime::default(),
            target: Target::default(),
            source_map: SourceMapMode::default(),
            source_map_source: None,
            decorators: Decorators::default(),
            minify_whitespace: false,
            max_source_bytes: DEFAULT_MAX_SOURCE_BYTES,
        }
    }

    /// Sets the JSX runtime.
    pub fn with_jsx(mut self, jsx: JsxRuntime) -> Self {
        self.jsx = jsx;
        self
    }

    /// Sets the output target.
    pub fn with_target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Sets the source map mode.
    pub fn with_source_map(mut self, mode: SourceMapMode) -> Self {
        self.source_map = mode;
        self
    }

    /// Sets how the source map's `sources` names the source (relative to the map).
    pub fn with_source_map_source(mut self, name: impl Into<String>) -> Self {
        self.source_map_source = Some(name.into());
        self
    }

    /// Sets the decorator semantics.
    pub fn with_decorators(mut self, decorators: Decorators) -> Self {
        self.decorators = decorators;
        self
    }

    /// Emits without insignificant whitespace and comments.
    pub fn with_minify_whitespace(mut self, minify: bool) -> Self {
        self.minify_whitespace = minify;
        self
    }

    /// Sets the size limit in bytes.
    pub fn with_max_source_bytes(mut self, max: usize) -> Self {
        self.max_source_bytes = max;
        self
    }
}
