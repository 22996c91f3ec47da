//! `chunkcast-samples`: writes or lists the deterministic sample library.

use std::path::PathBuf;
use std::process::ExitCode;

use chunkcast_media_samples as samples;

const USAGE: &str = "\
usage: chunkcast-samples generate DIR   write every sample into DIR (always rewrites)
       chunkcast-samples ensure [DIR]   generate only if DIR lacks a complete library
                                        (default: the server's cache directory)
       chunkcast-samples list           print the sample names and descriptions";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["generate", dir] => generate(dir.into()),
        ["ensure"] => ensure(samples::default_cache_dir()),
        ["ensure", dir] => ensure(dir.into()),
        ["list"] => {
            list();
            Ok(())
        }
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // {:#} puts the whole cause chain on one line.
            eprintln!("chunkcast-samples: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: PathBuf) -> anyhow::Result<()> {
    for path in samples::generate(&dir)? {
        let len = std::fs::metadata(&path)?.len();
        println!("{len:>10}  {}", path.display());
    }
    Ok(())
}

fn ensure(dir: PathBuf) -> anyhow::Result<()> {
    samples::ensure(&dir)?;
    println!("{}", dir.display());
    Ok(())
}

fn list() {
    for sample in samples::SAMPLES {
        println!("{:<26}  {}", sample.name, sample.description);
    }
}
