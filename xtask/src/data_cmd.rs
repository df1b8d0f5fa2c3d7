//! `cargo xtask data ...`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use data::download::{FetchOptions, fetch_dataset, import_file};
use data::manifest::{builtin, find_manifest};
use data::{DataDir, FileStatus};

use crate::flags::DataCommand;

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::List(d) => {
            let dir = crate::data_dir(d.dir.as_deref(), "--dir")?;
            println!("data directory: {}", dir.root().display());
            for m in builtin() {
                let status = if m.local_only {
                    let present = dir.dataset(&m.name).exists();
                    format!("local only ({})", if present { "present" } else { "missing" })
                } else if m.files.is_empty() {
                    "generated on first use".to_string()
                } else {
                    let states: Vec<FileStatus> = m.files.iter().map(|f| dir.status(&m, f)).collect();
                    let worst = if states.contains(&FileStatus::Missing) {
                        FileStatus::Missing
                    } else if states.contains(&FileStatus::Downloaded) {
                        FileStatus::Downloaded
                    } else {
                        FileStatus::Verified
                    };
                    let bytes: u64 = m.files.iter().map(|f| f.size).sum();
                    format!("{} ({:.1} MB in {} file(s))", worst.name(), bytes as f64 / 1e6, m.files.len())
                };
                println!("  {:<14} {:<40} {}", m.name, status, m.description);
            }
            Ok(())
        }
        DataCommand::Fetch { name, dir, mirror } => {
            let m = find_manifest(&name)?;
            let dir = DataDir::resolve(dir.dir.as_deref());
            let opts = FetchOptions { mirror, on_event: crate::progress::fetch_observer(), ..FetchOptions::default() };
            for path in fetch_dataset(&dir, &m, &opts)? {
                println!("verified {}", path.display());
            }
            Ok(())
        }
        DataCommand::Verify { name, dir } => {
            let m = find_manifest(&name)?;
            let dir = crate::data_dir(dir.dir.as_deref(), "--dir")?;
            if m.files.is_empty() {
                bail!("{} has no files to verify", m.name);
            }
            for f in &m.files {
                dir.verify(&m, f)?;
                println!("verified {}", dir.file(&m, f).display());
            }
            Ok(())
        }
        DataCommand::Import { name, from, dir } => {
            let m = find_manifest(&name)?;
            let dir = DataDir::resolve(dir.dir.as_deref());
            let from = from
                .or_else(|| m.import_from.as_ref().map(PathBuf::from))
                .with_context(|| format!("{} has no default import folder: pass --from DIR", m.name))?;
            for f in &m.files {
                let path = import_file(&dir, &m, f, &from)?;
                println!("verified {}", path.display());
            }
            let train = data::load_split(&dir, &m, data::Split::Train)?;
            let test = data::load_split(&dir, &m, data::Split::Test)?;
            println!("{}: {} train and {} test images, verified", m.name, train.len(), test.len());
            Ok(())
        }
        DataCommand::Load { spec, dir, holdout } => {
            let dir = crate::data_dir(dir.dir.as_deref(), "--dir")?;
            let start = Instant::now();
            let loaded = data::load_dataset(&spec, &dir, data::source::FolderOptions::holdout(holdout))?;
            let secs = start.elapsed().as_secs_f64();
            let n = loaded.train.len() + loaded.test.len();
            println!(
                "{}: {} images ({} train, {} test) of shape {:?} in {secs:.1} s ({:.0} images/s)",
                loaded.name,
                n,
                loaded.train.len(),
                loaded.test.len(),
                loaded.train.shape,
                n as f64 / secs
            );
            let train = loaded.train.class_counts();
            let test = loaded.test.class_counts();
            for (c, name) in loaded.train.classes.iter().enumerate() {
                println!(
                    "  {c:>3} {name:<16} {:>7} train {:>6} test {:>7} total",
                    train[c],
                    test[c],
                    train[c] + test[c]
                );
            }
            Ok(())
        }
    }
}
