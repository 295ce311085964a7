//! `meshrpc compat OLD NEW`: which changes between two versions of a crate's services
//! break their callers (meshrpc_codegen::compat), as a report and an exit code for CI.

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use meshrpc_codegen::compat::{compare, Contract, Verdict};

/// The callers a check cares about.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Both: JSON callers and generated clients.
    All,
    /// Callers that name arguments and fields: the gateway, HTTP, `meshrpc call`, Python.
    Json,
    /// Generated clients over the mesh (the contract's fingerprint, postcard's positions).
    Typed,
}

#[derive(clap::Args)]
pub(crate) struct CompatArgs {
    /// The old version: a .rs file, a directory of them, or REV:PATH of the git repository
    /// here (e.g. `v0.3.0:src`, `HEAD~1:crates/api/src`).
    old: String,
    /// The new version, in the same forms.
    new: String,
    /// Which callers must keep working for the exit code to be 0.
    #[arg(long, value_enum, default_value = "all")]
    level: Level,
}

/// Prints the report; exit code 0 when nothing breaks at the level, 1 when something
/// does, 2 when a version cannot be read.
pub(crate) fn run(root: &Path, args: CompatArgs) -> ExitCode {
    let read = |what: &str| -> Result<Contract, String> {
        let files = sources(root, what)?;
        Contract::from_sources(what, &files).map_err(|e| e.to_string())
    };
    let (old, new) = match (read(&args.old), read(&args.new)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = compare(&old, &new);
    let (json, typed) = (args.level != Level::Typed, args.level != Level::Json);
    let mark = |v: &Verdict| match v {
        Verdict::Safe => "safe".to_owned(),
        Verdict::Breaking(why) => format!("BREAKING ({why})"),
    };
    for change in &report.changes {
        println!("{}: {}", change.place, change.what);
        if json {
            println!("    json:  {}", mark(&change.json));
        }
        if typed {
            println!("    typed: {}", mark(&change.typed));
        }
    }
    if typed {
        for service in &report.new_fingerprint {
            println!(
                "{service}: its contract fingerprint changes; clients generated from {} call only replicas still at it \
                 (run both versions during the rollout)",
                args.old
            );
        }
    }
    let breaking = report.breaking(json, typed).count();
    let services = new.services().collect::<Vec<_>>().join(", ");
    if report.changes.is_empty() {
        println!("no change to the contract of {services}");
    } else {
        println!("{} change(s), {breaking} breaking ({:?} callers)", report.changes.len(), args.level);
    }
    if breaking > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The Rust files of a version: (path, text).
fn sources(root: &Path, what: &str) -> Result<Vec<(String, String)>, String> {
    let path = root.join(what);
    if path.exists() {
        let mut files = Vec::new();
        walk(&path, &mut files).map_err(|e| format!("{what}: {e}"))?;
        if files.is_empty() {
            return Err(format!("{what}: no .rs file"));
        }
        return Ok(files);
    }
    let Some((rev, dir)) = what.split_once(':') else {
        return Err(format!("{what}: no such file or directory (a git revision is REV:PATH)"));
    };
    let git = |args: &[&str]| -> Result<String, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .map_err(|e| format!("{what}: cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!("{what}: git {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        String::from_utf8(out.stdout).map_err(|_| format!("{what}: git printed something that is not UTF-8"))
    };
    let dir = if dir.is_empty() { "." } else { dir };
    let listed = git(&["ls-tree", "-r", "--name-only", "--full-name", rev, "--", dir])?;
    let mut files = Vec::new();
    for file in listed.lines().filter(|f| f.ends_with(".rs")) {
        files.push((format!("{rev}:{file}"), git(&["show", &format!("{rev}:{file}")])?));
    }
    if files.is_empty() {
        return Err(format!("{what}: no .rs file at that revision"));
    }
    Ok(files)
}

fn walk(path: &PathBuf, files: &mut Vec<(String, String)>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
        entries.sort();
        for entry in entries {
            walk(&entry, files)?;
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        files.push((path.display().to_string(), std::fs::read_to_string(path)?));
    }
    Ok(())
}
