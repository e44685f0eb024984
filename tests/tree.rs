//! What is on a lab host under a directory, read with plain OpenSSH, `find -printf` and
//! `sha256sum -z` (NUL-separated, names as raw bytes): independent of the tool's own probes and
//! quoting, so tests can compare it with what they declared.

use crate::support::Lab;
use std::collections::BTreeMap;

/// One path's type and attributes.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// `f` file, `d` directory, `l` symbolic link, other letters as `find %y`.
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// sha256 of a regular file's content.
    pub sha256: Option<String>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(s) = &self.sha256 {
            write!(f, " sha256 {}", &s[..16])?;
        }
        Ok(())
    }
}

/// Paths (relative to the root, raw bytes) and what is there.
pub(crate) type Tree = BTreeMap<Vec<u8>, Node>;

/// Reads everything below `root` on `host` (not `root` itself). A missing root is an empty tree.
pub(crate) fn read(lab: &Lab, host: &str, root: &str) -> Tree {
    let q = claw_provision::quote::quote(root);
    let script = format!(
        "[ -d {q} ] || exit 0; cd {q} || exit 1; \
         find . -mindepth 1 -printf '%y\\t%m\\t%U\\t%G\\t%P\\0' && printf '@@\\0' && \
         find . -mindepth 1 -type f -exec sha256sum -z -- {{}} +"
    );
    let o = lab.ssh(
        host,
        &format!("sudo sh -c {}", claw_provision::quote::quote(&script)),
    );
    assert!(
        o.status.success(),
        "reading {root} on {host}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut tree = Tree::new();
    let mut hashes = false;
    for rec in o.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        if rec == b"@@" {
            hashes = true;
            continue;
        }
        if hashes {
            // "HASH  ./NAME"
            let sha = String::from_utf8(rec[..64].to_vec()).unwrap();
            let name = rec[66..].strip_prefix(b"./").expect("./NAME").to_vec();
            tree.get_mut(&name).expect("hashed path listed").sha256 = Some(sha);
            continue;
        }
        let mut f = rec.splitn(5, |b| *b == b'\t');
        let mut text = || String::from_utf8(f.next().unwrap().to_vec()).unwrap();
        let kind = text().chars().next().unwrap();
        let mode = u32::from_str_radix(&text(), 8).unwrap();
        let uid = text().parse().unwrap();
        let gid = text().parse().unwrap();
        let name = f.next().unwrap().to_vec();
        tree.insert(
            name,
            Node {
                kind,
                mode,
                uid,
                gid,
                sha256: None,
            },
        );
    }
    tree
}

pub(crate) fn sha256(data: &[u8]) -> String {
    claw_provision::testing::sha256_hex(data)
}

/// A path for messages: printable, escapes shown.
pub(crate) fn show(p: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(p))
}

/// A TOML basic string holding `s` exactly (control characters escaped).
pub(crate) fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Users and groups every light lab host has (name, id).
pub(crate) const USERS: &[(&str, u32)] = &[
    ("root", 0),
    ("daemon", 1),
    ("www-data", 33),
    ("nobody", 65534),
    ("claw", 1001),
];
pub(crate) const GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("adm", 4),
    ("staff", 50),
    ("nogroup", 65534),
    ("claw", 1001),
];
