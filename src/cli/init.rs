//! `init`: a starter inventory, playbook and template in a new directory.

use super::*;
use std::io::Write;

/// The files `init` writes, relative to its directory.
const INIT_FILES: [(&str, &str); 3] = [
    ("inventory.toml", include_str!("../init/inventory.toml")),
    ("playbook.toml", include_str!("../init/playbook.toml")),
    (
        "templates/app.conf.tera",
        include_str!("../init/app.conf.tera"),
    ),
];

pub(super) fn init(dir: &Path) -> Result<Outcome, Error> {
    let io = |what: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", what.display()));
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{}: not empty; init writes only into a new or empty directory (nothing was written)",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        Err(e) => return Err(io(dir, e)),
    }
    for (name, text) in INIT_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        // create_new: never replaces a file (one made meanwhile included)
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.write_all(text.as_bytes()).map_err(|e| io(&path, e))?;
        report::out(&format!("created {}\n", path.display()));
    }
    let inv = dir.join("inventory.toml");
    report::out(&format!(
        "next: set your servers in {inv}, then
  claw-provision validate {inv}
  claw-provision plan {inv}\n",
        inv = inv.display()
    ));
    Ok(Outcome::Done)
}
