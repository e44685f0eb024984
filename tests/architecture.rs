//! Invariants of the code map (ARCHITECTURE.md), checked by reading `src/`: every module has a
//! `//!` doc, only `src/ssh/` names russh, only `src/report/` (and `main.rs`) writes to the
//! terminal, no process-wide mutable state (`static` cells, `thread_local!`). Pure file reading:
//! no lab, no binary.

use std::path::Path;

/// Every `.rs` file under `src/`: its path relative to the crate (with `/`) and its text, sorted.
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
                let rel = rel.to_str().unwrap().replace('\\', "/");
                out.push((rel, std::fs::read_to_string(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    assert!(out.len() > 50, "src/ read: {} files", out.len());
    out
}

/// The code lines of a text: lines that are only a comment (`//`, `///`, `//!`) are dropped, so a
/// doc that mentions a name is not a use of it.
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` without its `#[cfg(test)]` modules: from a `#[cfg(test)]` line at column 0 that is
/// followed by `mod NAME {` to the `}` at column 0 that closes it (rustfmt puts it there).
fn without_test_modules(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let opens_tests = lines[i] == "#[cfg(test)]"
            && lines.get(i + 1).is_some_and(|n| {
                n.starts_with("mod ") || n.starts_with("pub mod ") || n.starts_with("#[")
            })
            && lines[i + 1..]
                .iter()
                .find(|n| !n.starts_with("#["))
                .is_some_and(|n| n.contains("mod ") && n.ends_with('{'));
        if opens_tests {
            while i < lines.len() && lines[i] != "}" {
                i += 1;
            }
        } else {
            out.push(lines[i]);
        }
        i += 1;
    }
    out.join("\n")
}

/// How often `token` occurs in `text` not preceded by a letter, digit or `_` (so `print!` is not
/// counted inside `eprint!`, nor `stderr()` inside `color_stderr()`).
fn count(text: &str, token: &str) -> usize {
    text.match_indices(token)
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .count()
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(missing.is_empty(), "no `//!` module doc: {missing:?}");
}

/// Only `src/ssh/` names russh: the rest connects through `connect` and uses `ssh::` types.
#[test]
fn only_ssh_names_russh() {
    let users: Vec<String> = sources()
        .into_iter()
        .filter(|(path, text)| !path.starts_with("src/ssh/") && count(&code(text), "russh") > 0)
        .map(|(path, _)| path)
        .collect();
    assert!(
        users.is_empty(),
        "only src/ssh/ may name russh (connect through `ssh::`): {users:?}"
    );
}

/// What writes to (or asks on) the terminal: print macros, the standard streams, password
/// prompts. Only `src/report/` (its `prompt` module included) and `src/main.rs` use them.
const TERMINAL: &[&str] = &[
    "println!",
    "eprintln!",
    "print!",
    "eprint!",
    "dbg!",
    "stdout()",
    "stderr()",
    "stdin()",
    "rpassword::",
];

/// Test modules are left out: a test's own diagnostics (`eprintln!` of how many inputs a fuzz
/// replay ran) are not the program's output.
#[test]
fn only_report_writes_to_the_terminal() {
    let mut writers = Vec::new();
    for (path, text) in sources() {
        if path.starts_with("src/report/") || path == "src/main.rs" {
            continue;
        }
        let text = code(&without_test_modules(&text));
        let n: usize = TERMINAL.iter().map(|t| count(&text, t)).sum();
        if n > 0 {
            writers.push(format!("{path} ({n})"));
        }
    }
    assert!(
        writers.is_empty(),
        "only src/report/ (and main.rs) may write to the terminal: {writers:?}"
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert_eq!(count("eprint!(x); print!(y); println!()", "print!"), 1);
    assert_eq!(count("color_stderr() + std::io::stderr()", "stderr()"), 1);
    assert_eq!(count(&code("/// russh docs\nuse russh::keys;"), "russh"), 1);
    let t = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() { println!() }\n}\nfn c() {}";
    assert_eq!(without_test_modules(t), "fn a() {}\nfn c() {}");
    let t = "#[cfg(test)]\n#[allow(unused)]\nmod tests {\n    x\n}\ny";
    assert_eq!(without_test_modules(t), "y");
    let t = "#[cfg(test)]\nfn only_in_tests() {}";
    assert_eq!(without_test_modules(t), t);
}

/// The file a module path names: `src/a/b.rs` or `src/a/b/mod.rs` for `a::b`, trying the
/// longest prefix of `segments` that is a file (the rest are items).
fn module_file(files: &std::collections::BTreeSet<String>, segments: &[&str]) -> Option<String> {
    (1..=segments.len()).rev().find_map(|n| {
        let base = format!("src/{}", segments[..n].join("/"));
        [format!("{base}.rs"), format!("{base}/mod.rs")]
            .into_iter()
            .find(|f| files.contains(f))
    })
}

/// The folder of a file's module: `src/run/` for `src/run/host.rs` and `src/run/mod.rs`, `src/`
/// for `src/plan.rs`.
fn module_dir(file: &str) -> String {
    let dir = &file[..=file.rfind('/').unwrap()];
    if file.ends_with("/mod.rs") || file == "src/lib.rs" || file == "src/main.rs" {
        dir.to_string()
    } else {
        format!("{dir}{}/", &file[dir.len()..file.len() - 3])
    }
}

/// Which files of `src/` each file imports: every `crate::a::b` and `super::x` path in its code
/// (tests left out), resolved to the file that defines the module. A folder's `mod.rs` and its own
/// children are not arrows of each other (a parent declares and re-exports its children, and a
/// child names its parent's items as `super::`): what is checked is between rooms.
fn imports() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let srcs = sources();
    let files: std::collections::BTreeSet<String> = srcs.iter().map(|(p, _)| p.clone()).collect();
    let ident = |s: &str| {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut out = std::collections::BTreeMap::new();
    for (path, text) in &srcs {
        let code = code(&without_test_modules(text));
        let own = module_dir(path);
        let parent = if path.ends_with("/mod.rs") {
            let d = own.trim_end_matches('/');
            format!("{}/", &d[..d.rfind('/').unwrap()])
        } else {
            path[..=path.rfind('/').unwrap()].to_string()
        };
        let mut to = std::collections::BTreeSet::new();
        for (prefix, base) in [("crate::", "src/".to_string()), ("super::", parent.clone())] {
            for (i, _) in code.match_indices(prefix) {
                if code[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                {
                    continue;
                }
                let mut segs: Vec<String> = base
                    .trim_start_matches("src/")
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                let mut rest = &code[i + prefix.len()..];
                loop {
                    let id = ident(rest);
                    if id.is_empty() {
                        break;
                    }
                    segs.push(id.clone());
                    rest = &rest[id.len()..];
                    match rest.strip_prefix("::") {
                        Some(r) => rest = r,
                        None => break,
                    }
                }
                // `use crate::{a, b::c}`: each name of the group is a path of its own.
                let groups: Vec<Vec<String>> = if let Some(g) = rest.strip_prefix('{') {
                    let g = &g[..g.find('}').unwrap_or(g.len())];
                    g.split(',')
                        .map(|p| {
                            let mut s = segs.clone();
                            s.extend(p.trim().split("::").map(ident).filter(|x| !x.is_empty()));
                            s
                        })
                        .collect()
                } else {
                    vec![segs]
                };
                for s in groups {
                    let s: Vec<&str> = s.iter().map(String::as_str).collect();
                    if let Some(f) = module_file(&files, &s) {
                        let f_dir = module_dir(&f);
                        let family = f == *path
                            || (path.ends_with("/mod.rs") && f.starts_with(&own))
                            || (f.ends_with("/mod.rs") && path.starts_with(&f_dir));
                        if !family && f != "src/lib.rs" {
                            to.insert(f);
                        }
                    }
                }
            }
        }
        out.insert(path.clone(), to);
    }
    out
}

/// No two files of `src/` import each other through any chain: the code is layered, each room
/// above what it imports (ARCHITECTURE.md "Layers"). A circle is printed whole.
#[test]
fn no_import_circle() {
    let graph = imports();
    assert!(
        graph["src/run/mod.rs"].contains("src/saved_plan.rs")
            && graph["src/saved_plan.rs"].contains("src/run/outcome.rs"),
        "the import reader finds `crate::` paths: {:?}",
        graph["src/run/mod.rs"]
    );
    // Depth-first search for a back edge; `stack` is the current path.
    fn visit(
        n: &str,
        g: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        state: &mut std::collections::BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == m).unwrap();
                    let mut circle = stack[from..].to_vec();
                    circle.push(m.clone());
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = std::collections::BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n.as_str()) {
            let circle = visit(n, &graph, &mut state, &mut Vec::new());
            assert!(
                circle.is_none(),
                "import circle: {}",
                circle.unwrap_or_default().join(" -> ")
            );
        }
    }
}

/// Resources see only facts and return changes whose ops are the exact scripts: they never reach
/// the transport, the runner or the command line.
#[test]
fn resources_never_touch_the_transport() {
    let graph = imports();
    let bad: Vec<String> = graph
        .iter()
        .filter(|(f, _)| f.starts_with("src/resource/") || f.starts_with("src/fact/"))
        .flat_map(|(f, to)| {
            to.iter()
                .filter(|t| {
                    [
                        "src/ssh/",
                        "src/remote/",
                        "src/connect.rs",
                        "src/run/",
                        "src/cli/",
                    ]
                    .iter()
                    .any(|p| t.starts_with(p))
                })
                .map(move |t| format!("{f} -> {t}"))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:?}");
}

/// Step kinds are types (`resource::Kind`): nothing outside `src/resource/` compares a kind with a
/// name; what differs between kinds is asked of the kind.
#[test]
fn kinds_are_never_compared_as_strings() {
    let mut hits = Vec::new();
    for (path, text) in sources() {
        if path.starts_with("src/resource/") {
            continue;
        }
        let code = code(&without_test_modules(&text));
        for (n, line) in code.lines().enumerate() {
            let l = line.replace(' ', "");
            if l.contains("kind==\"") || l.contains("kind!=\"") || l.contains("kind.as_str()") {
                hits.push(format!("{path}: {}", line.trim()));
            }
            let _ = n;
        }
    }
    assert!(hits.is_empty(), "{hits:?}");
}

/// Types whose `static` would be process-wide mutable state (interior mutability).
const CELLS: [&str; 8] = [
    "OnceLock", "OnceCell", "LazyLock", "Mutex", "RwLock", "Atomic", "RefCell", "Cell",
];

/// Process-wide state that is allowed, with the reason: (file, what).
const GLOBALS_ALLOWED: &[(&str, &str)] = &[
    // An immutable value (the probe script the fuzz target parses against), built once per
    // fuzzing thread: nothing in it changes.
    ("src/fuzzing.rs", "thread_local!"),
];

/// The process-wide mutable state declared in `text`: each `static NAME: TYPE` whose type names
/// one of [`CELLS`] (the declaration is read up to its `=` or `;`, so a type rustfmt wrapped
/// onto the next line counts), and each `thread_local!`.
fn mutable_globals(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices("static ") {
        // `static` as an item keyword: at a line start or after `pub`/`pub(crate)`, not `'static`.
        let before = text[..i].rsplit('\n').next().unwrap_or("").trim();
        if !(before.is_empty() || before.starts_with("pub")) {
            continue;
        }
        let decl = &text[i..];
        let end = decl.find(['=', ';']).unwrap_or(decl.len());
        let decl = decl[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        if CELLS.iter().any(|c| decl.contains(c)) {
            found.push(decl);
        }
    }
    found.extend((0..count(text, "thread_local!")).map(|_| "thread_local!".to_string()));
    found
}

/// Issue 18: "a cache owned by a run context and passed explicitly is fine; hidden process-wide
/// mutable state is not". Each cache is owned by a context a command creates (`ssh::Client`, the
/// run's `PlaybookInfo`, ...). Test modules are left out.
#[test]
fn no_process_wide_mutable_state() {
    let mut globals = Vec::new();
    for (path, text) in sources() {
        for g in mutable_globals(&code(&without_test_modules(&text))) {
            let allowed = GLOBALS_ALLOWED
                .iter()
                .any(|(f, what)| *f == path && g.contains(what));
            if !allowed {
                globals.push(format!("{path}: {g}"));
            }
        }
    }
    assert!(
        globals.is_empty(),
        "process-wide mutable state in src/ (own it in a context passed explicitly): {globals:?}"
    );
}

#[test]
fn the_globals_check_sees_them() {
    let t = "static A: OnceLock<String> = OnceLock::new();\n\
             pub(crate) static B:\n    std::sync::Mutex<u8> = Mutex::new(0);\n\
             static C: &str = \"Mutex\";\n\
             fn f(x: &'static Mutex<u8>) {}\n\
             thread_local! { static D: u8 = 0; }\n\
             const E: AtomicBool = AtomicBool::new(false);";
    assert_eq!(
        mutable_globals(t),
        [
            "static A: OnceLock<String>",
            "static B: std::sync::Mutex<u8>",
            "thread_local!"
        ]
    );
}

/// The longest a function may be (from its `fn` line to its closing brace) and a file before
/// its `#[cfg(test)]` module (issue 18: past that, a reader loses the thread; cut along the
/// logic's seams, or write the reason above the function and name it here).
const MAX_FN_LINES: usize = 80;
const MAX_FILE_LINES: usize = 600;
/// Functions allowed past [`MAX_FN_LINES`], as (file, name), each with its reason above it.
const LONG_FNS_ALLOWED: &[(&str, &str)] = &[];
/// Files allowed past [`MAX_FILE_LINES`] before their tests.
const LONG_FILES_ALLOWED: &[&str] = &[];

/// Each function of a file (tests left out) with its length in lines, as rustfmt lays code out:
/// the body closes with a `}` at the indentation of its `fn` line. A declaration without a body
/// (`fn f();` in a trait) is not counted.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let Some(at) = trimmed.find("fn ") else {
            continue;
        };
        let head = &trimmed[..at];
        let is_fn = head
            .split_whitespace()
            .all(|w| ["pub", "async", "const", "unsafe"].contains(&w) || w.starts_with("pub("));
        if !is_fn || trimmed.starts_with("//") {
            continue;
        }
        let name: String = trimmed[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The signature ends at the first line ending in `{` (a body) or `;` (none).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        let opened = lines[open].trim_end();
        if opened.ends_with(';') {
            continue;
        }
        if opened.ends_with('}') {
            out.push((name, open - i + 1));
            continue;
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j].trim_end() == close) {
            out.push((name, end - i + 1));
        }
    }
    out
}

/// A file up to its `#[cfg(test)] mod NAME {` (at column 0, where rustfmt puts it).
fn before_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i] == "#[cfg(test)]"
                && lines[i + 1..]
                    .iter()
                    .find(|n| !n.starts_with("#["))
                    .is_some_and(|n| n.starts_with("mod ") && n.ends_with('{'))
        })
        .unwrap_or(lines.len());
    lines[..end].join("\n")
}

/// No function over [`MAX_FN_LINES`] and no file over [`MAX_FILE_LINES`] before its tests, but
/// those named in the allow lists.
#[test]
fn functions_and_files_stay_short() {
    let mut long = Vec::new();
    for (path, text) in sources() {
        let text = before_tests(&text);
        let n = text.lines().count();
        if n > MAX_FILE_LINES && !LONG_FILES_ALLOWED.contains(&path.as_str()) {
            long.push(format!("{path}: {n} lines"));
        }
        for (name, len) in function_lengths(&text) {
            let allowed = LONG_FNS_ALLOWED.contains(&(path.as_str(), name.as_str()));
            if len > MAX_FN_LINES && !allowed {
                long.push(format!("{path}: fn {name}: {len} lines"));
            }
        }
    }
    assert!(long.is_empty(), "too long (cut along the seams): {long:?}");
}

#[test]
fn the_length_check_sees_them() {
    let body = "        x();\n".repeat(3);
    let t = format!(
        "impl A {{\n    pub(crate) async fn long(\n        a: u8,\n    ) -> u8 {{\n{body}    }}\n\
         \n    fn short() {{}}\n}}\ntrait T {{\n    fn declared(&self);\n}}\nconst fn c() -> u8 {{\n    1\n}}"
    );
    assert_eq!(
        before_tests(&format!("{t}\n#[cfg(test)]\nmod tests {{\n}}\n")),
        t
    );
    let cfg_use = "#[cfg(test)]\nuse a::b;\nfn x() {}";
    assert_eq!(before_tests(cfg_use), cfg_use);
    assert_eq!(
        function_lengths(&t),
        [
            ("long".to_string(), 7),
            ("short".to_string(), 1),
            ("c".to_string(), 3)
        ]
    );
}
