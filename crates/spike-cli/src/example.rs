//! `spike example`: the headless main job until the desktop app exists.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context as _;

use crate::{files, fmt, transpile};

/// The example project: a React app in TSX, written by this repository (it lives in
/// spike-collab, which also seeds new rooms from it).
pub use spike_templates::example::FILES;

/// Arguments of `spike example`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the project (created if missing); its `dist/` gets the ES modules.
    #[arg(default_value = "spike-example")]
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = args.dir.join("src");
    for (name, text) in FILES {
        let path = src.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote the example project ({} files) to {}",
        FILES.len(),
        src.display()
    );

    let started = Instant::now();
    let out_dir = args.dir.join("dist");
    let transpile_args = transpile::Args::for_example(src.clone(), out_dir.clone());
    let mut failed = 0;
    let inputs = files::expand(std::slice::from_ref(&src), false, &mut failed)?;
    let outcomes = transpile::transpile_all(&transpile_args, inputs);
    for o in &outcomes {
        match &o.result {
            Ok(t) => {
                transpile::write_output(&out_dir, &o.input.relative, t)?;
                let imports: Vec<&str> = t.imports.iter().map(|i| i.specifier.as_str()).collect();
                println!(
                    "  transpiled {:<26} {:>5} → {:>5} bytes  imports: {}",
                    o.input.relative.display(),
                    o.bytes_in,
                    t.code.len(),
                    imports.join(", ")
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    println!(
        "transpiled {} files into {} in {} ms (with inline source maps)",
        outcomes.len() - failed,
        out_dir.display(),
        started.elapsed().as_millis()
    );

    let started = Instant::now();
    let inputs = files::expand(std::slice::from_ref(&src), true, &mut failed)?;
    let statuses = fmt::format_all(&inputs);
    let mut unformatted = 0;
    for (input, status) in inputs.iter().zip(&statuses) {
        match status {
            fmt::Status::Unchanged => {}
            fmt::Status::Changed(_) => {
                unformatted += 1;
                println!("  would reformat {}", input.relative.display());
            }
            fmt::Status::Failed(e) => {
                failed += 1;
                eprintln!("{e}");
            }
        }
    }
    println!(
        "fmt --check: {} of {} files formatted in {} ms",
        inputs.len() - unformatted,
        inputs.len(),
        started.elapsed().as_millis()
    );
    Ok(if failed + unformatted > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
