//! `spike transpile`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use anyhow::Context as _;
use clap::ValueEnum;
use rayon::prelude::*;
use spike_transpile::{
    transpile_bytes, Decorators, JsxRuntime, SourceMapMode, Target, TranspileError,
    TranspileOptions, Transpiled,
};

use crate::files;

#[derive(Clone, Copy, ValueEnum)]
enum Jsx {
    Automatic,
    Classic,
}

#[derive(Clone, Copy, ValueEnum)]
enum SourceMap {
    None,
    Inline,
    External,
}

#[derive(Clone, Copy, ValueEnum)]
enum DecoratorKind {
    Standard,
    Legacy,
}

/// Arguments of `spike transpile`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or folders (walked recursively, respecting .gitignore).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write outputs here, mirroring the inputs' layout. Without it, one file is printed to
    /// stdout and several are only checked.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// JSX runtime.
    #[arg(long, value_enum, default_value = "automatic")]
    jsx: Jsx,
    /// Package providing `jsx-runtime` for the automatic runtime.
    #[arg(long, default_value = "react")]
    jsx_import_source: String,
    /// Element factory for the classic runtime.
    #[arg(long, default_value = "React.createElement")]
    jsx_factory: String,
    /// Fragment factory for the classic runtime.
    #[arg(long, default_value = "React.Fragment")]
    jsx_fragment: String,
    /// ECMAScript version of the output: es2018 … es2022, esnext.
    #[arg(long, default_value = "es2022")]
    target: Target,
    /// Source maps.
    #[arg(long, value_enum, default_value = "none")]
    sourcemap: SourceMap,
    /// Decorator semantics: TC39 standard, or TypeScript's experimentalDecorators.
    #[arg(long, value_enum, default_value = "standard")]
    decorators: DecoratorKind,
    /// With legacy decorators, emit design-time type metadata (emitDecoratorMetadata).
    #[arg(long)]
    emit_decorator_metadata: bool,
}

impl Args {
    fn options(&self, file_name: String) -> TranspileOptions {
        TranspileOptions::new(file_name)
            .with_jsx(match self.jsx {
                Jsx::Automatic => JsxRuntime::Automatic {
                    import_source: self.jsx_import_source.clone(),
                },
                Jsx::Classic => JsxRuntime::Classic {
                    factory: self.jsx_factory.clone(),
                    fragment_factory: self.jsx_fragment.clone(),
                },
            })
            .with_target(self.target)
            .with_source_map(match self.sourcemap {
                SourceMap::None => SourceMapMode::None,
                SourceMap::Inline => SourceMapMode::Inline,
                SourceMap::External => SourceMapMode::External,
            })
            .with_decorators(match self.decorators {
                DecoratorKind::Standard => Decorators::Standard,
                DecoratorKind::Legacy => Decorators::Legacy {
                    emit_metadata: self.emit_decorator_metadata,
                },
            })
    }
}

/// What happened to one file.
pub struct Outcome {
    pub input: files::Input,
    pub bytes_in: usize,
    pub result: Result<Transpiled, TranspileError>,
}

/// Transpiles every input in parallel. Returns the outcomes in input order.
pub fn transpile_all(args: &Args, inputs: Vec<files::Input>) -> Vec<Outcome> {
    let bar = files::progress(inputs.len());
    let outcomes = inputs
        .into_par_iter()
        .map(|input| {
            let name = input.path.to_string_lossy().into_owned();
            let mut options = args.options(name.clone());
            if let Some(source) = args.out_dir.as_deref().and_then(|d| map_source(d, &input)) {
                options = options.with_source_map_source(source);
            }
            let (bytes_in, result) = match std::fs::read(&input.path) {
                Ok(bytes) => (bytes.len(), transpile_bytes(&bytes, &options)),
                Err(e) => (
                    0,
                    Err(TranspileError::Internal {
                        file: name,
                        message: format!("cannot read: {e}"),
                    }),
                ),
            };
            bar.inc(1);
            Outcome {
                input,
                bytes_in,
                result,
            }
        })
        .collect();
    bar.finish_and_clear();
    outcomes
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut failed = 0;
    let inputs = files::expand(&args.paths, false, &mut failed)?;
    let single_to_stdout = args.out_dir.is_none() && inputs.len() == 1 && args.paths[0].is_file();
    if let Some(dir) = &args.out_dir {
        let conflicts = output_conflicts(dir, &inputs);
        if !conflicts.is_empty() {
            for c in &conflicts {
                eprintln!("error: {c}");
            }
            eprintln!("nothing was written");
            return Ok(ExitCode::from(1));
        }
    }
    let outcomes = transpile_all(&args, inputs);
    let (mut bytes_in, mut bytes_out) = (0, 0);
    for outcome in &outcomes {
        match &outcome.result {
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
            Ok(t) => {
                for w in &t.diagnostics {
                    eprintln!("{w}");
                }
                bytes_in += outcome.bytes_in;
                bytes_out += t.code.len();
                if single_to_stdout {
                    print!("{}", t.code);
                } else if let Some(dir) = &args.out_dir {
                    write_output(dir, &outcome.input.relative, t)?;
                }
            }
        }
    }
    if !single_to_stdout {
        eprintln!(
            "transpiled {} of {} files ({} → {} bytes) in {} ms{}",
            outcomes.len() - failed,
            outcomes.len(),
            bytes_in,
            bytes_out,
            started.elapsed().as_millis(),
            args.out_dir
                .as_ref()
                .map(|d| format!(" into {}", d.display()))
                .unwrap_or_default()
        );
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Outputs that would overwrite an input, or that two inputs would both write (`a.ts` and `a.tsx`
/// both become `a.js`).
fn output_conflicts(dir: &Path, inputs: &[files::Input]) -> Vec<String> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let sources: std::collections::HashSet<PathBuf> =
        inputs.iter().map(|i| canonical(&i.path)).collect();
    let mut writers: std::collections::HashMap<PathBuf, &Path> = Default::default();
    let mut conflicts = Vec::new();
    for input in inputs {
        let out = output_path(dir, &input.relative);
        let resolved = out
            .parent()
            .map(|p| canonical(p).join(out.file_name().unwrap_or_default()))
            .unwrap_or_else(|| out.clone());
        if sources.contains(&resolved) {
            conflicts.push(format!(
                "{} would overwrite the input file {}",
                out.display(),
                input.path.display()
            ));
        }
        if let Some(first) = writers.insert(resolved, &input.path) {
            conflicts.push(format!(
                "{} and {} would both be written to {}",
                first.display(),
                input.path.display(),
                out.display()
            ));
        }
    }
    conflicts
}

/// The input as a source map beside its output names it: relative to the output's folder.
fn map_source(dir: &Path, input: &files::Input) -> Option<String> {
    let out = std::path::absolute(output_path(dir, &input.relative)).ok()?;
    let source = std::path::absolute(&input.path).ok()?;
    let relative = pathdiff::diff_paths(source, out.parent()?)?;
    Some(relative.to_string_lossy().replace('\\', "/"))
}

fn output_path(dir: &Path, relative: &Path) -> PathBuf {
    dir.join(spike_transpile::output_file_name(
        &relative.to_string_lossy(),
    ))
}

pub fn write_output(dir: &Path, relative: &Path, t: &Transpiled) -> anyhow::Result<()> {
    let out = dir.join(spike_transpile::output_file_name(
        &relative.to_string_lossy(),
    ));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&out, &t.code).with_context(|| format!("writing {}", out.display()))?;
    if let Some(map) = &t.source_map {
        let map_path = PathBuf::from(format!("{}.map", out.display()));
        std::fs::write(&map_path, map)
            .with_context(|| format!("writing {}", map_path.display()))?;
    }
    Ok(())
}

impl Args {
    /// The options `spike example` uses: defaults, inline source maps.
    pub fn for_example(src: PathBuf, out_dir: PathBuf) -> Args {
        Args {
            paths: vec![src],
            out_dir: Some(out_dir),
            jsx: Jsx::Automatic,
            jsx_import_source: "react".into(),
            jsx_factory: "React.createElement".into(),
            jsx_fragment: "React.Fragment".into(),
            target: Target::Es2022,
            sourcemap: SourceMap::Inline,
            decorators: DecoratorKind::Standard,
            emit_decorator_metadata: false,
        }
    }
}
