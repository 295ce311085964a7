//! `meshrpc expose`: write a service's generated server and client to files, for review
//! and for builds without the attribute's expansion (as Go meshRPC's generator did).

use std::{
    io::{BufRead, IsTerminal, Write},
    path::{Path, PathBuf},
};

use meshrpc_codegen::expose::{client_file, find_services, handler_file, select};

#[derive(clap::Args)]
pub(crate) struct ExposeArgs {
    /// The crate or module the files belong to (written in their header).
    #[arg(short = 'P', long = "package")]
    package: String,
    /// With several service traits: pick `<PREFIX>Service` (or `<PREFIX>`); files get the
    /// prefix (`foo_handler_gen.rs`).
    #[arg(short = 'M', long = "module")]
    prefix: Option<String>,
    /// Write without asking.
    #[arg(short = 'y', long)]
    yes: bool,
    /// Source file or directory holding the trait (relative to the project root).
    #[arg(default_value = ".")]
    src: PathBuf,
}

struct Planned {
    path: PathBuf,
    text: String,
}

pub(crate) fn run(root: &Path, args: ExposeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let src = root.join(&args.src);
    let (dir, files) = if src.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
            .map_err(|e| format!("reading {}: {e}", src.display()))?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rs") && !is_generated(p))
            .collect();
        files.sort();
        (src.clone(), files)
    } else if src.is_file() {
        (src.parent().unwrap_or(Path::new(".")).to_path_buf(), vec![src.clone()])
    } else {
        return Err(format!("dir {} must exist", show(root, &src)).into());
    };
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        found.extend(find_services(&text).map_err(|e| format!("{}: {e}", file.display()))?);
    }
    let service = select(found, args.prefix.as_deref())?;
    if !service.marked_expose {
        eprintln!(
            "note: mark the trait `#[meshrpc::service(expose)]` so these files replace the attribute's expansion"
        );
    }
    let prefix = args.prefix.as_deref().map(|p| format!("{}_", meshrpc_codegen::snake_case(p))).unwrap_or_default();
    let plan = [
        Planned { path: dir.join(format!("{prefix}handler_gen.rs")), text: handler_file(&service.def, &args.package) },
        Planned { path: dir.join(format!("{prefix}client_gen.rs")), text: client_file(&service.def, &args.package) },
    ];

    println!("Actions to be committed");
    println!("├── [1]  dir {} must exist", show(root, &dir));
    for (i, p) in plan.iter().enumerate() {
        let branch = if i + 1 == plan.len() { "└──" } else { "├──" };
        let verb = if p.path.exists() { "overwrite" } else { "create" };
        println!(
            "{branch} [{}]  {verb} file {} with {} lines of content",
            i + 2,
            show(root, &p.path),
            p.text.lines().count()
        );
    }
    if !args.yes && !confirm()? {
        println!("Nothing written.");
        return Ok(());
    }
    write_all(&plan)?;
    for (i, p) in plan.iter().enumerate() {
        println!("Action#{}: wrote {}", i + 2, show(root, &p.path));
    }
    Ok(())
}

fn is_generated(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with("handler_gen.rs") || n.ends_with("client_gen.rs"))
}

/// `[project]/service/handler_gen.rs`
fn show(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => "[project]".into(),
        Ok(rel) => format!("[project]/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

/// Asks on the terminal; re-asks until the answer is yes or no.
fn confirm() -> Result<bool, Box<dyn std::error::Error>> {
    if !std::io::stdin().is_terminal() {
        return Err("not a terminal: pass -y to write without asking".into());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("Are you sure to apply these changes?: ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next() else { return Ok(false) };
        match line?.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => return Ok(true),
            "n" | "no" => return Ok(false),
            _ => println!("Please answer yes or no."),
        }
    }
}

/// Writes every file or none: on a failure, files already written get their old
/// content back (or are removed).
fn write_all(plan: &[Planned]) -> Result<(), Box<dyn std::error::Error>> {
    let mut done: Vec<(&Path, Option<Vec<u8>>)> = Vec::new();
    for p in plan {
        let before = std::fs::read(&p.path).ok();
        let tmp = p.path.with_extension("rs.tmp");
        let result = std::fs::write(&tmp, &p.text).and_then(|()| std::fs::rename(&tmp, &p.path));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            for (path, old) in done.into_iter().rev() {
                let _ = match old {
                    Some(bytes) => std::fs::write(path, bytes),
                    None => std::fs::remove_file(path),
                };
            }
            return Err(format!("writing {}: {e}; nothing was changed", p.path.display()).into());
        }
        done.push((&p.path, before));
    }
    Ok(())
}
