//! parse → check → transform → emit, on a thread with a large stack.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use swc_core::{
    common::{
        comments::SingleThreadedComments,
        errors::{DiagnosticBuilder, Emitter, Handler, Level, HANDLER},
        sync::Lrc,
        BytePos, FileName, Globals, Mark, SourceFile, SourceMap, Span, GLOBALS,
    },
    ecma::{
        ast::{EsVersion, Module, Program},
        codegen::{text_writer::JsWriter, Emitter as CodeEmitter},
        parser::{EsSyntax, Parser, StringInput, Syntax, TsSyntax},
        transforms::{
            base::{
                fixer::fixer,
                helpers::{inject_helpers, Helpers, HELPERS},
                hygiene::hygiene,
                resolver,
            },
            compat,
            proposal::{
                decorator_2022_03::decorator_2022_03, decorators,
                explicit_resource_management::explicit_resource_management,
            },
            react,
            typescript::{self, TsImportExportAssignConfig},
        },
    },
};

use crate::{
    checks::{self, Finding, Scan},
    decorator_compat, imports, merged_namespaces, Decorators, Diagnostic, JsxRuntime, Severity,
    SourceKind, SourceMapMode, Target, TranspileError, TranspileOptions, Transpiled,
};

/// The stack swc runs on. swc's parser, visitors and `Drop` recurse once per nesting level;
/// 10,000 levels of JSX need about 200 MiB in a debug build. The segment is reserved lazily, so an
/// unused stack costs address space, not memory.
const STACK_BYTES: usize = 1024 * 1024 * 1024;

pub(crate) fn run(source: &str, options: &TranspileOptions) -> Result<Transpiled, TranspileError> {
    let file = options.file_name.as_str();
    let kind = kind_of(file)?;
    if source.len() > options.max_source_bytes {
        return Err(TranspileError::TooLarge {
            file: file.to_owned(),
            size: source.len(),
            limit: options.max_source_bytes,
        });
    }
    let source = without_bom(source);
    with_large_stack(|| transpile_on_this_thread(source, kind, options)).unwrap_or_else(|message| {
        Err(TranspileError::Internal {
            file: file.to_owned(),
            message: format!("the transpiler failed on this input ({message})"),
        })
    })
}

fn kind_of(file: &str) -> Result<SourceKind, TranspileError> {
    SourceKind::from_path(file).ok_or_else(|| TranspileError::UnsupportedExtension {
        file: file.to_owned(),
    })
}

/// swc drops a byte order mark itself; dropping it first keeps our byte offsets equal to swc's.
fn without_bom(source: &str) -> &str {
    source.strip_prefix('\u{feff}').unwrap_or(source)
}

/// Runs `f` on a stack large enough for swc (and dprint, which uses the same parser) on deeply
/// nested input, on the calling thread, and catches a panic inside it.
///
/// The stack is a fresh segment of [`STACK_BYTES`] switched to with `stacker` when less than that
/// is left; a new thread per call would cost a thread start and, with mimalloc, a new heap.
///
/// # Errors
/// The panic message if `f` panicked.
pub fn with_large_stack<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stacker::maybe_grow(STACK_BYTES / 2, STACK_BYTES, f)
    }))
    .map_err(|panic| panic_message(&panic))
}

/// Parses `source`: its syntax errors, and how deeply its blocks and literals nest.
pub(crate) fn check_syntax(source: &str, file: &str) -> Result<SyntaxCheck, TranspileError> {
    let kind = kind_of(file)?;
    let source = without_bom(source);
    with_large_stack(|| {
        let (_, cx) = Context::new(file, source);
        let comments = SingleThreadedComments::default();
        let parsed = GLOBALS.set(&Globals::new(), || parse_file(&cx, kind, &comments));
        match parsed {
            Ok(program) => {
                let (depth, pos) = checks::nesting(&program);
                SyntaxCheck {
                    errors: Vec::new(),
                    nesting_depth: depth,
                    deepest: (depth > 0)
                        .then(|| cx.diagnostic(Severity::Warning, pos, String::new())),
                }
            }
            Err(e) => SyntaxCheck {
                errors: e.diagnostics(),
                nesting_depth: 0,
                deepest: None,
            },
        }
    })
    .map_err(|message| TranspileError::Internal {
        file: file.to_owned(),
        message: format!("the parser failed on this input ({message})"),
    })
}

/// What [`check_syntax`] found.
#[derive(Debug, Clone)]
pub struct SyntaxCheck {
    /// Every syntax error the parser found, in source order; empty when the source parses.
    pub errors: Vec<Diagnostic>,
    /// The deepest nesting of blocks, object and array literals, call arguments, parentheses,
    /// classes, type literals and JSX elements (each level usually one level of indentation).
    pub nesting_depth: usize,
    /// The innermost construct of the deepest nesting (an empty message); `None` without nesting
    /// or on errors.
    pub deepest: Option<Diagnostic>,
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    format!("{text}; please report it with the file")
}

/// Collects what swc's transforms report through [`HANDLER`].
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Reported>>>);

/// One diagnostic from swc: its level, message and primary span.
type Reported = (Level, String, Option<Span>);

impl Emitter for Collected {
    fn emit(&mut self, db: &mut DiagnosticBuilder<'_>) {
        let entry = (db.level, db.message(), db.span.primary_span());
        if let Ok(mut v) = self.0.lock() {
            v.push(entry);
        }
    }
}

struct Context<'a> {
    source: &'a str,
    file: &'a str,
    fm: Lrc<SourceFile>,
}

impl<'a> Context<'a> {
    /// A source map holding `source` as the one file, named `file`.
    fn new(file: &'a str, source: &'a str) -> (Lrc<SourceMap>, Self) {
        let cm: Lrc<SourceMap> = Lrc::default();
        let fm = cm.new_source_file(
            Lrc::new(FileName::Custom(file.to_owned())),
            source.to_owned(),
        );
        (cm, Context { source, file, fm })
    }

    fn diagnostic(&self, severity: Severity, pos: BytePos, message: String) -> Diagnostic {
        let offset = pos.0.saturating_sub(self.fm.start_pos.0) as usize;
        let mut d = Diagnostic::error_at(self.file, self.source, offset, message);
        d.severity = severity;
        d
    }

    fn findings(&self, findings: Vec<Finding>) -> Vec<Diagnostic> {
        findings
            .into_iter()
            .map(|f| self.diagnostic(Severity::Error, f.span.lo, f.message))
            .collect()
    }
}

fn transpile_on_this_thread(
    source: &str,
    kind: SourceKind,
    options: &TranspileOptions,
) -> Result<Transpiled, TranspileError> {
    let (cm, cx) = Context::new(&options.file_name, source);
    let comments = SingleThreadedComments::default();
    let collected = Collected::default();
    let handler = Handler::with_emitter(true, false, Box::new(collected.clone()));

    GLOBALS.set(&Globals::new(), || {
        HANDLER.set(&handler, || {
            let module = match parse_file(&cx, kind, &comments)? {
                Program::Module(module) if !SourceKind::is_declaration_file(cx.file) => module,
                // Declaration files hold types only: checked for syntax, they emit nothing.
                _ => {
                    return Ok(Transpiled {
                        code: String::new(),
                        source_map: None,
                        imports: Vec::new(),
                        diagnostics: Vec::new(),
                    })
                }
            };

            let mut scan = Scan::of(&module);
            let mut errors = checks::import_export_assignments(&module);
            errors.extend(checks::duplicate_exports(&module));
            if options.decorators == Decorators::Standard {
                errors.append(&mut scan.parameter_decorators);
            }
            if options.target < Target::Es2022 {
                errors.append(&mut scan.private_in);
            }
            if !errors.is_empty() {
                errors.sort_by_key(|f| f.span.lo);
                return Err(TranspileError::Diagnostics(cx.findings(errors)));
            }

            let mut program = Program::Module(module);
            let needs_transform =
                kind.is_typescript() || scan.needs_transform() || options.target < Target::Es2022;
            if needs_transform {
                transform(&mut program, &cm, &comments, kind, &scan, options);
            } else if options.minify_whitespace {
                // Comparisons of programs must not depend on redundant parentheses.
                program.mutate(fixer(None));
            }

            let reported =
                std::mem::take(
                    &mut *collected.0.lock().map_err(|_| TranspileError::Internal {
                        file: options.file_name.clone(),
                        message: "diagnostics lock poisoned".into(),
                    })?,
                );
            let mut warnings = Vec::new();
            let mut errors = Vec::new();
            for (level, message, span) in reported {
                let pos = span.map_or(cx.fm.start_pos, |s| s.lo);
                match level {
                    Level::Warning | Level::Note | Level::Help => {
                        warnings.push(cx.diagnostic(Severity::Warning, pos, message))
                    }
                    Level::Cancelled => {}
                    _ => errors.push(cx.diagnostic(Severity::Error, pos, message)),
                }
            }
            if !errors.is_empty() {
                return Err(TranspileError::Diagnostics(errors));
            }

            let Program::Module(module) = program else {
                unreachable!("the pipeline only builds modules")
            };
            let imports = imports::collect(&module, scan.dynamic_imports);
            let (code, source_map) = emit(&module, &cm, &comments, options)?;
            Ok(Transpiled {
                code,
                source_map,
                imports,
                diagnostics: warnings,
            })
        })
    })
}

fn parse(
    cx: &Context<'_>,
    kind: SourceKind,
    comments: &SingleThreadedComments,
) -> Result<Module, TranspileError> {
    let syntax = match kind {
        SourceKind::TypeScript | SourceKind::Tsx => Syntax::Typescript(TsSyntax {
            tsx: kind == SourceKind::Tsx,
            decorators: true,
            ..Default::default()
        }),
        SourceKind::JavaScript => Syntax::Es(EsSyntax {
            jsx: true,
            decorators: true,
            decorators_before_export: true,
            import_attributes: true,
            auto_accessors: true,
            explicit_resource_management: true,
            ..Default::default()
        }),
    };
    let mut parser = Parser::new(syntax, StringInput::from(&*cx.fm), Some(comments));
    let result = parser.parse_module();
    finish_parse(cx, result, parser.take_errors())
}

/// Parses the file: a declaration file as a script or module of types (where `import x =
/// require()` and `export =` are valid), anything else as an ES module.
fn parse_file(
    cx: &Context<'_>,
    kind: SourceKind,
    comments: &SingleThreadedComments,
) -> Result<Program, TranspileError> {
    if SourceKind::is_declaration_file(cx.file) {
        parse_declarations(cx, comments)
    } else {
        parse(cx, kind, comments).map(Program::Module)
    }
}

fn parse_declarations(
    cx: &Context<'_>,
    comments: &SingleThreadedComments,
) -> Result<Program, TranspileError> {
    let syntax = Syntax::Typescript(TsSyntax {
        dts: true,
        ..Default::default()
    });
    let mut parser = Parser::new(syntax, StringInput::from(&*cx.fm), Some(comments));
    let result = parser.parse_program();
    finish_parse(cx, result, parser.take_errors())
}

fn finish_parse<T>(
    cx: &Context<'_>,
    result: Result<T, swc_core::ecma::parser::error::Error>,
    recovered: Vec<swc_core::ecma::parser::error::Error>,
) -> Result<T, TranspileError> {
    let mut errors: Vec<Diagnostic> = recovered
        .into_iter()
        .map(|e| parse_diagnostic(cx, e))
        .collect();
    match result {
        Ok(parsed) if errors.is_empty() => Ok(parsed),
        Ok(_) => Err(TranspileError::Diagnostics(errors)),
        Err(fatal) => {
            errors.push(parse_diagnostic(cx, fatal));
            errors.sort_by_key(|d| (d.line, d.column));
            errors.dedup();
            Err(TranspileError::Diagnostics(errors))
        }
    }
}

fn parse_diagnostic(cx: &Context<'_>, e: swc_core::ecma::parser::error::Error) -> Diagnostic {
    use swc_core::common::Spanned;
    let span = e.span();
    cx.diagnostic(Severity::Error, span.lo, e.into_kind().msg().into_owned())
}

fn transform(
    program: &mut Program,
    cm: &Lrc<SourceMap>,
    comments: &SingleThreadedComments,
    kind: SourceKind,
    features: &Scan,
    options: &TranspileOptions,
) {
    let unresolved_mark = Mark::new();
    let top_level_mark = Mark::new();
    HELPERS.set(&Helpers::new(false), || {
        program.mutate(resolver(
            unresolved_mark,
            top_level_mark,
            kind.is_typescript(),
        ));
        if features.namespaces {
            if let Program::Module(module) = program {
                merged_namespaces::qualify(module);
            }
        }

        if let Decorators::Legacy { emit_metadata } = options.decorators {
            if features.decorators {
                program.mutate(decorators::decorators(decorators::Config {
                    legacy: true,
                    emit_metadata,
                    use_define_for_class_fields: true,
                }));
                decorator_compat::legacy_like_tsc(program, HELPERS.with(|h| h.mark()));
            }
        }

        let (pragma, pragma_frag) = match &options.jsx {
            JsxRuntime::Classic {
                factory,
                fragment_factory,
            } => (Some(factory.clone()), Some(fragment_factory.clone())),
            JsxRuntime::Automatic { .. } => (None, None),
        };
        let ts_config = typescript::Config {
            // `import x = require()` has no meaning in an ES module: report it (TS1202).
            import_export_assign_config: TsImportExportAssignConfig::EsNext,
            // TypeScript's `useDefineForClassFields`, true for ES2022 and newer targets.
            native_class_properties: true,
            ..Default::default()
        };
        match kind {
            SourceKind::Tsx => program.mutate(typescript::tsx(
                cm.clone(),
                ts_config,
                typescript::TsxConfig {
                    pragma: pragma.clone().map(Into::into),
                    pragma_frag: pragma_frag.clone().map(Into::into),
                },
                comments,
                unresolved_mark,
                top_level_mark,
            )),
            SourceKind::TypeScript => program.mutate(typescript::typescript(
                ts_config,
                unresolved_mark,
                top_level_mark,
            )),
            SourceKind::JavaScript => {}
        }

        if options.decorators == Decorators::Standard
            && (features.decorators || features.auto_accessors)
        {
            program.mutate(decorator_2022_03());
            decorator_compat::standard_in_proposal_order(program, HELPERS.with(|h| h.mark()));
        }
        if features.using {
            program.mutate(explicit_resource_management());
        }
        if features.jsx {
            // A `/** @jsx h */` pragma asks for the classic runtime, as in esbuild and tsc; swc
            // would refuse it under the automatic runtime.
            let classic_by_pragma =
                matches!(options.jsx, JsxRuntime::Automatic { .. }) && has_factory_pragma(comments);
            let react_options = match &options.jsx {
                JsxRuntime::Automatic { .. } if classic_by_pragma => react::Options {
                    runtime: Some(react::Runtime::Classic),
                    ..Default::default()
                },
                JsxRuntime::Automatic { import_source } => react::Options {
                    runtime: Some(react::Runtime::Automatic),
                    import_source: Some(import_source.as_str().into()),
                    ..Default::default()
                },
                JsxRuntime::Classic { .. } => react::Options {
                    runtime: Some(react::Runtime::Classic),
                    pragma: pragma.map(Into::into),
                    pragma_frag: pragma_frag.map(Into::into),
                    ..Default::default()
                },
            };
            program.mutate(react::react(
                cm.clone(),
                Some(comments),
                react::Options {
                    development: Some(false),
                    // Namespaced names (`xlink:href`, `svg:rect`) are valid JSX and common in SVG.
                    throw_if_namespace: Some(false),
                    ..react_options
                },
                top_level_mark,
                unresolved_mark,
            ));
        }

        lower_to(program, options.target, unresolved_mark);

        program.mutate(inject_helpers(unresolved_mark));
        program.mutate(hygiene());
        program.mutate(fixer(Some(comments)));
    });
}

/// True if a comment holds a `@jsx <factory>` pragma and no `@jsxRuntime` pragma.
fn has_factory_pragma(comments: &SingleThreadedComments) -> bool {
    let (leading, trailing) = comments.borrow_all();
    let texts = || {
        leading
            .values()
            .chain(trailing.values())
            .flatten()
            .map(|c| c.text.as_str())
    };
    let factory = texts().any(|t| {
        t.match_indices("@jsx")
            .any(|(i, _)| t[i + 4..].starts_with(char::is_whitespace))
    });
    factory && !texts().any(|t| t.contains("@jsxRuntime"))
}

/// Applies the compat passes for every ECMAScript edition newer than `target`, newest first.
fn lower_to(program: &mut Program, target: Target, unresolved_mark: Mark) {
    if target < Target::Es2022 {
        program.mutate(compat::es2022::es2022(Default::default(), unresolved_mark));
    }
    if target < Target::Es2021 {
        program.mutate(compat::es2021::es2021());
    }
    if target < Target::Es2020 {
        program.mutate(compat::es2020::es2020(Default::default(), unresolved_mark));
    }
    if target < Target::Es2019 {
        program.mutate(compat::es2019::es2019());
    }
}

fn es_version(target: Target) -> EsVersion {
    match target {
        Target::Es2018 => EsVersion::Es2018,
        Target::Es2019 => EsVersion::Es2019,
        Target::Es2020 => EsVersion::Es2020,
        Target::Es2021 => EsVersion::Es2021,
        Target::Es2022 => EsVersion::Es2022,
        Target::EsNext => EsVersion::EsNext,
    }
}

struct SourceMapConfig<'a> {
    /// What `sources` names the file by.
    source_name: Option<&'a str>,
}

impl swc_core::common::source_map::SourceMapGenConfig for SourceMapConfig<'_> {
    fn file_name_to_source(&self, f: &FileName) -> String {
        self.source_name
            .map_or_else(|| f.to_string(), str::to_owned)
    }

    // The editor's files exist only in memory: without their text the map is useless.
    fn inline_sources_content(&self, _: &FileName) -> bool {
        true
    }
}

fn emit(
    module: &Module,
    cm: &Lrc<SourceMap>,
    comments: &SingleThreadedComments,
    options: &TranspileOptions,
) -> Result<(String, Option<String>), TranspileError> {
    let internal = |message: String| TranspileError::Internal {
        file: options.file_name.clone(),
        message,
    };
    let want_map = options.source_map != SourceMapMode::None;
    let mut buf = Vec::with_capacity(cm.files().first().map_or(0, |f| f.src.len()));
    let mut mappings = Vec::new();
    {
        let mut emitter = CodeEmitter {
            cfg: swc_core::ecma::codegen::Config::default()
                .with_target(es_version(options.target))
                .with_minify(options.minify_whitespace),
            cm: cm.clone(),
            comments: if options.minify_whitespace {
                None
            } else {
                Some(comments)
            },
            wr: JsWriter::new(
                cm.clone(),
                "\n",
                &mut buf,
                want_map.then_some(&mut mappings),
            ),
        };
        emitter
            .emit_module(module)
            .map_err(|e| internal(format!("code generation failed: {e}")))?;
    }
    let mut code = String::from_utf8(buf)
        .map_err(|e| internal(format!("code generation produced invalid UTF-8: {e}")))?;
    if !want_map {
        return Ok((code, None));
    }
    let config = SourceMapConfig {
        source_name: options.source_map_source.as_deref(),
    };
    let mut map = cm.build_source_map(&mappings, None, config);
    let out_name = crate::output_file_name(&options.file_name);
    // `file` names the generated file as seen from the map, which sits beside it.
    let base = out_name.rsplit('/').next().unwrap_or(&out_name).to_owned();
    map.set_file(Some(base.clone()));
    let mut json = Vec::new();
    map.to_writer(&mut json)
        .map_err(|e| internal(format!("could not write the source map: {e}")))?;
    let json =
        String::from_utf8(json).map_err(|e| internal(format!("source map is not UTF-8: {e}")))?;
    if !code.ends_with('\n') {
        code.push('\n');
    }
    match options.source_map {
        SourceMapMode::Inline => {
            code.push_str("//# sourceMappingURL=data:application/json;base64,");
            code.push_str(&base64::engine::general_purpose::STANDARD.encode(&json));
            code.push('\n');
            Ok((code, None))
        }
        _ => {
            code.push_str(&format!("//# sourceMappingURL={base}.map\n"));
            Ok((code, Some(json)))
        }
    }
}
