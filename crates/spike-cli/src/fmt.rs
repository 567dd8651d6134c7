//! `spike fmt`.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{bail, Context as _};
use rayon::prelude::*;
use spike_format::{format, FormatConfig, FormatError};

use crate::files;

/// Arguments of `spike fmt`.
#[derive(clap::Args)]
pub struct Args {
    /// Files or folders (walked recursively, respecting .gitignore).
    #[arg(
        required_unless_present = "stdin_filepath",
        conflicts_with = "stdin_filepath"
    )]
    paths: Vec<PathBuf>,
    /// Do not write: list the files that would change and exit 1 if there are any.
    #[arg(long)]
    check: bool,
    /// Format stdin to stdout; NAME picks the language and the configuration file.
    #[arg(long, value_name = "NAME")]
    stdin_filepath: Option<PathBuf>,
}

/// What `fmt` found for one file.
pub enum Status {
    Unchanged,
    Changed(String),
    Failed(FormatError),
}

/// Formats every input in parallel, each with the configuration found from its own folder.
pub fn format_all(inputs: &[files::Input]) -> Vec<Status> {
    let bar = files::progress(inputs.len());
    let dir_of = |input: &files::Input| {
        input
            .path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf()
    };
    let mut configs: HashMap<PathBuf, Result<FormatConfig, FormatError>> = HashMap::new();
    for input in inputs {
        configs
            .entry(dir_of(input))
            .or_insert_with_key(|dir| FormatConfig::discover(dir));
    }
    let statuses = inputs
        .par_iter()
        .map(|input| {
            let name = input.path.to_string_lossy().into_owned();
            let status = match std::fs::read(&input.path) {
                Err(e) => Status::Failed(FormatError::Internal {
                    file: name,
                    message: format!("cannot read: {e}"),
                }),
                Ok(bytes) => match spike_transpile::decode_utf8(&name, &bytes) {
                    Err(e) => Status::Failed(FormatError::Syntax(e.diagnostics())),
                    Ok(text) => {
                        let config = configs.get(&dir_of(input)).cloned();
                        let config = config.unwrap_or_else(|| Ok(FormatConfig::default()));
                        match config.and_then(|c| format(&name, text, &c)) {
                            Ok(None) => Status::Unchanged,
                            Ok(Some(new)) => Status::Changed(new),
                            Err(e) => Status::Failed(e),
                        }
                    }
                },
            };
            bar.inc(1);
            status
        })
        .collect();
    bar.finish_and_clear();
    statuses
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(name) = &args.stdin_filepath {
        return stdin(name);
    }
    let (mut changed, mut failed) = (0, 0);
    let inputs = files::expand(&args.paths, true, &mut failed)?;
    let statuses = format_all(&inputs);
    let mut reported = std::collections::HashSet::new();
    for (input, status) in inputs.iter().zip(statuses) {
        match status {
            Status::Unchanged => {}
            Status::Changed(text) => {
                changed += 1;
                if args.check {
                    println!("{}", input.path.display());
                } else {
                    std::fs::write(&input.path, text)
                        .with_context(|| format!("writing {}", input.path.display()))?;
                }
            }
            Status::Failed(e) => {
                failed += 1;
                // A bad configuration fails every file under it: say so once.
                let message = e.to_string();
                if !matches!(
                    e,
                    FormatError::Config { .. } | FormatError::ConfigSyntax { .. }
                ) || reported.insert(message.clone())
                {
                    eprintln!("{message}");
                }
            }
        }
    }
    let verb = if args.check {
        "would reformat"
    } else {
        "formatted"
    };
    eprintln!(
        "checked {} files: {verb} {changed}, {} already formatted, {failed} with errors",
        inputs.len(),
        inputs.len() - changed - failed
    );
    Ok(if failed > 0 || (args.check && changed > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn stdin(name: &std::path::Path) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("reading stdin")?;
    let file = name.to_string_lossy();
    let text = match spike_transpile::decode_utf8(&file, &bytes) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let dir = name
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let config = FormatConfig::discover(dir)?;
    match format(&file, text, &config) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_deref().unwrap_or(text).as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ FormatError::UnsupportedExtension { .. }) => bail!("{e}"),
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
