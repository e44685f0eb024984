//! Read-only probes: each fact is a POSIX sh snippet plus a parser of its output.
//!
//! All probes of a host are joined into ONE script ([`ProbeScript`]) sent in one round trip.
//! Every record a snippet prints is a line `@ID<TAB>...`, so the parser can tell which request it
//! answers. **Invariant:** probe snippets have no side effects.

pub(crate) mod account;
pub(crate) mod apt;
pub(crate) mod compose;
pub(crate) mod fetch;
pub(crate) mod firewall;
pub(crate) mod git;
pub(crate) mod guard;
pub(crate) mod host;
pub(crate) mod image;
pub(crate) mod lock;
pub(crate) mod path;
pub(crate) mod preflight;
pub(crate) mod secret;
pub(crate) mod service;

pub(crate) use account::{GroupState, UserInfo, UserState};
pub(crate) use apt::{DpkgState, PkgState};
pub(crate) use compose::ComposeState;
pub(crate) use fetch::FetchState;
pub(crate) use firewall::FirewallState;
pub(crate) use git::GitState;
pub(crate) use guard::GuardState;
pub(crate) use host::{HostFacts, SystemFacts};
pub(crate) use image::ImageState;
pub(crate) use path::PathState;
pub(crate) use secret::SecretState;
pub(crate) use service::ServiceState;

/// Something a step needs to know about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Type, mode, owner, group, size and sha256 of a path.
    Path(String),
    /// The guards of a command step.
    Guard {
        creates: Option<String>,
        unless: Option<String>,
    },
    /// A user account.
    User(String),
    /// A group.
    Group(String),
    /// A secret file (its value is read back) and the path of the data it protects.
    Secret { path: String, guard: Option<String> },
    /// What dpkg knows about these packages.
    Packages(Vec<String>),
    /// The nftables table (by name) of a `firewall` step.
    Firewall(String),
    /// A git checkout and the commit its ref designates.
    Git(git::Query),
    /// A Docker Compose project.
    Compose(compose::Query),
    /// A systemd unit (full name, `docker.service`).
    Service(String),
    /// A Docker image (`image` steps).
    Image(image::Query),
    /// The file a `fetch` step copies (links followed).
    Fetch(String),
    /// The private directories interrupted uploads left in a directory (see
    /// [`path::LEFTOVERS_FUNCTION`]).
    Leftovers(String),
}

/// What a probe observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Path(PathState),
    Guard(GuardState),
    User(UserState),
    Group(GroupState),
    Secret(SecretState),
    Dpkg(DpkgState),
    Firewall(FirewallState),
    Git(GitState),
    Compose(ComposeState),
    Service(ServiceState),
    Image(ImageState),
    Fetch(FetchState),
    /// Names of upload private directories left in a directory, sorted.
    Leftovers(Vec<String>),
}

/// A probe output that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("unexpected probe output: {0}")]
pub struct FactError(pub String);

/// Why a probe's answer cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The target lacks something every probe needs.
    #[error("{0}")]
    Preflight(String),
    /// The output of one request (by id) or of the whole script is not what was expected.
    #[error("{error}")]
    Output {
        request: Option<usize>,
        error: FactError,
    },
}

impl From<FactError> for ProbeError {
    fn from(error: FactError) -> Self {
        ProbeError::Output {
            request: None,
            error,
        }
    }
}

/// The joined probe of one host: preflight plus every request, in one script.
#[derive(Debug, Default)]
pub struct ProbeScript {
    requests: Vec<Request>,
    upload_dirs: Vec<String>,
    /// Ask for the host's facts.
    facts: bool,
    /// Read the handler journal of this playbook.
    journal: Option<String>,
    /// Take the apply lock: (holder description, this process as a lock client, force).
    lock: Option<(String, String, bool)>,
    /// The `facts` command's probe: memory, CPUs and uptime too; a preflight problem is
    /// reported with the facts instead of failing the probe.
    report: bool,
}

impl ProbeScript {
    /// The first probe of a host: its facts and the playbook's handler journal, besides the
    /// steps' requests added later.
    pub fn for_host(playbook: &str) -> Self {
        Self {
            facts: true,
            journal: Some(playbook.to_string()),
            ..Self::default()
        }
    }

    /// The probe of the `facts` command: the host's facts, its memory, CPUs and uptime, and the
    /// free space of `dirs`; no playbook, so no journal, no secret and no step request. Its
    /// preflight problems are reported ([`ProbeResult::problems`]), not fatal.
    pub fn host_report(dirs: &[&str]) -> Self {
        let mut p = Self {
            facts: true,
            report: true,
            ..Self::default()
        };
        for d in dirs {
            p.add_upload_dir(d);
        }
        p
    }

    /// Takes the host's apply lock in this script (see [`lock`]).
    /// `client`: this process as [`lock::local_client`] describes it (computed once per command).
    pub fn take_lock(&mut self, holder: &str, client: &str, force: bool) {
        self.lock = Some((holder.to_string(), client.to_string(), force));
    }

    /// Whether the lock section is there and breaks the current holder's lock.
    pub fn lock_forced(&self) -> bool {
        matches!(self.lock, Some((_, _, true)))
    }

    /// The requests, by id.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// Adds a request and returns its id (its index).
    pub fn add(&mut self, r: Request) -> usize {
        self.requests.push(r);
        self.requests.len() - 1
    }

    /// Asks the preflight for the free space of the file system holding `dir`.
    pub fn add_upload_dir(&mut self, dir: &str) {
        if !self.upload_dirs.iter().any(|d| d == dir) {
            self.upload_dirs.push(dir.to_string());
        }
    }

    /// Directories whose free space the preflight reports, in order.
    pub fn upload_dirs(&self) -> &[String] {
        &self.upload_dirs
    }

    /// The script text.
    pub fn script(&self) -> String {
        let mut s = String::new();
        s.push_str(preflight::HEADER);
        s.push_str(path::FUNCTION);
        let paths: Vec<(usize, &str)> = self
            .requests
            .iter()
            .enumerate()
            .filter_map(|(id, r)| match r {
                Request::Path(p) => Some((id, p.as_str())),
                _ => None,
            })
            .collect();
        if !paths.is_empty() {
            s.push_str(path::BATCH_FUNCTION);
        }
        let docker = self.facts
            || (self.requests.iter()).any(|r| matches!(r, Request::Compose(_) | Request::Image(_)));
        if docker {
            s.push_str(host::DOCKER_FUNCTION);
            s.push_str("claw_docker_facts\n");
        }
        if self.facts {
            s.push_str(host::FACTS);
        }
        if self.report {
            s.push_str(host::SYSTEM);
        }
        if let Some((holder, client, force)) = &self.lock {
            s.push_str(&lock::command(holder, client, *force));
        }
        if let Some(pb) = &self.journal {
            s.push_str(&host::journal_command(pb));
        }
        if self
            .requests
            .iter()
            .any(|r| matches!(r, Request::Firewall(_)))
        {
            s.push_str(firewall::FUNCTION);
        }
        if (self.requests.iter()).any(|r| matches!(r, Request::Leftovers(_))) {
            s.push_str(path::LEFTOVERS_FUNCTION);
        }
        if !self.upload_dirs.is_empty() {
            s.push_str(preflight::FREE_FUNCTION);
            s.push_str(&preflight::free_space(&self.upload_dirs));
        }
        if !paths.is_empty() {
            s.push_str(&path::batch_command(&paths));
        }
        let packages: Vec<&str> = (self.requests.iter())
            .filter_map(|r| match r {
                Request::Packages(p) => Some(p.iter().map(String::as_str)),
                _ => None,
            })
            .flatten()
            .collect();
        if !packages.is_empty() {
            s.push_str(&apt::batch_command(&packages));
        }
        let secrets: Vec<(usize, &str, Option<&str>)> = (self.requests.iter().enumerate())
            .filter_map(|(id, r)| match r {
                Request::Secret { path, guard } => Some((id, path.as_str(), guard.as_deref())),
                _ => None,
            })
            .collect();
        if !secrets.is_empty() {
            s.push_str(PHYSDIR_FN);
            s.push_str(secret::OPEN_FUNCTION);
            s.push_str(secret::FUNCTION);
            s.push_str(secret::BATCH_FUNCTION);
            s.push_str(&secret::batch_command(&secrets));
        }
        self.request_commands(&mut s);
        s.push_str("echo '@end'\n");
        s
    }

    /// The script's section for each request not answered by a batch, in request order.
    fn request_commands(&self, s: &mut String) {
        for (id, r) in self.requests.iter().enumerate() {
            match r {
                Request::Path(_) => {}
                Request::Guard { creates, unless } => {
                    s.push_str(&guard::command(id, creates.as_deref(), unless.as_deref()));
                }
                Request::User(name) => s.push_str(&account::user_command(id, name)),
                Request::Group(name) => s.push_str(&account::group_command(id, name)),
                Request::Secret { .. } => {}
                Request::Packages(_) => {}
                Request::Firewall(table) => s.push_str(&firewall::command(id, table)),
                Request::Git(q) => s.push_str(&git::command(id, q)),
                Request::Compose(q) => s.push_str(&compose::command(id, q)),
                Request::Service(u) => s.push_str(&service::command(id, u)),
                Request::Image(q) => s.push_str(&image::command(id, q)),
                Request::Fetch(p) => s.push_str(&fetch::command(id, p)),
                Request::Leftovers(d) => s.push_str(&path::leftovers_command(id, d)),
            }
        }
    }

    /// The secret values in the output of this script when it failed (`secret::recover`): the
    /// caller masks them in what it shows of the failure.
    pub fn secrets_read(&self, out: &[u8]) -> Vec<crate::secret::Secret> {
        let is_secret = |id: usize| matches!(self.requests.get(id), Some(Request::Secret { .. }));
        secret::recover(&String::from_utf8_lossy(out), is_secret)
    }

    /// Parses the script's output: the preflight first (a missing tool explains any odd record
    /// after it), then every record, then the batched answers, then whether all were answered.
    pub fn parse(&self, out: &str) -> Result<ProbeResult, ProbeError> {
        if !out.lines().any(|l| l == "@end") {
            return Err(unfinished().into());
        }
        let (pre, problems) = self.parse_preflight(out)?;
        let mut r = Records::new(self.requests.len());
        for line in out.lines() {
            let Some(rest) = line.strip_prefix('@') else {
                continue;
            };
            let mut fields = rest.split('\t');
            let tag = fields.next().unwrap_or("");
            let fields: Vec<&str> = fields.collect();
            self.parse_record(&mut r, tag, &fields)?;
        }
        if !r.ended {
            return Err(unfinished().into());
        }
        self.settle_batches(&mut r)?;
        let observed = r
            .observed
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                o.ok_or_else(|| ProbeError::Output {
                    request: Some(i),
                    error: FactError("no answer from its probe".into()),
                })
            })
            .collect::<Result<_, _>>()?;
        if self.facts && !r.facts.complete() {
            return Err(FactError("the host's facts are incomplete".into()).into());
        }
        if self.lock.is_some() && r.lock.is_none() {
            return Err(FactError("no answer about the apply lock".into()).into());
        }
        if self.report && r.system.is_none() {
            return Err(FactError("no answer about memory, CPUs and uptime".into()).into());
        }
        Ok(ProbeResult {
            observed,
            preflight: pre,
            facts: self.facts.then_some(r.facts),
            journal: r.journal,
            lock: r.lock,
            system: r.system,
            problems,
        })
    }

    /// The `@pre-` records: the preflight and its problems. A problem fails the probe (except
    /// for the `facts` command's, which reports it), as do uploads that do not fit.
    fn parse_preflight(
        &self,
        out: &str,
    ) -> Result<(preflight::Preflight, Vec<String>), ProbeError> {
        let mut pre = preflight::Preflight::default();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("@pre-") {
                let mut fields = rest.split('\t');
                let tag = fields.next().unwrap_or("");
                pre.parse_line(tag, &fields.collect::<Vec<_>>(), &self.upload_dirs)?;
            }
        }
        let problems = pre.problems();
        if let (Some(p), false) = (problems.first(), self.report) {
            return Err(ProbeError::Preflight(p.clone()));
        }
        pre.check_free(&self.upload_dirs)?;
        Ok((pre, problems))
    }

    /// One record (`@TAG<TAB>FIELDS...`) other than the preflight's, into `r`.
    fn parse_record(&self, r: &mut Records, tag: &str, fields: &[&str]) -> Result<(), ProbeError> {
        // Records are named by their tag only: a field may hold a secret.
        let shown: String = tag.chars().take(40).collect();
        if tag == "end" {
            r.ended = true;
        } else if tag.starts_with("pre-") {
            // Read by `parse_preflight`.
        } else if let Some(t) = tag.strip_prefix("fact-") {
            r.facts.parse_line(t, fields)?;
        } else if r.paths.take(tag, fields)?
            || r.dpkg.take(tag, fields)?
            || r.secrets.take(tag, fields)?
        {
            // Taken by its batch, settled in `settle_batches`.
        } else if tag == "sys" && self.report {
            r.system = Some(SystemFacts::parse(fields)?);
        } else if tag == "lock" {
            r.lock = Some(lock::parse(fields)?);
        } else if tag == "journal" {
            let name = fields
                .first()
                .and_then(|n| host::decode_name(n))
                .ok_or_else(|| FactError("bad handler journal entry".into()))?;
            r.journal.push(name);
        } else {
            let id: usize = tag
                .parse()
                .map_err(|_| FactError(format!("bad record `@{shown}`")))?;
            let req = self
                .requests
                .get(id)
                .ok_or_else(|| FactError(format!("record for unknown id `@{shown}`")))?;
            r.observed[id] =
                Some(
                    parse_answer(req, fields).map_err(|error| ProbeError::Output {
                        request: Some(id),
                        error,
                    })?,
                );
        }
        Ok(())
    }

    /// The answers that came in batches (paths, secret files, packages), each to its request.
    fn settle_batches(&self, r: &mut Records) -> Result<(), ProbeError> {
        let path_ids: Vec<usize> = (self.requests.iter().enumerate())
            .filter(|(_, r)| matches!(r, Request::Path(_)))
            .map(|(id, _)| id)
            .collect();
        let states = (r.paths.states(path_ids.len())).map_err(|(i, error)| ProbeError::Output {
            request: i.and_then(|i| path_ids.get(i).copied()),
            error,
        })?;
        if let Some(states) = states {
            for (id, st) in path_ids.into_iter().zip(states) {
                r.observed[id] = Some(Observed::Path(st));
            }
        }
        for (id, st) in r.secrets.states()? {
            if let Some(Request::Secret { .. }) = self.requests.get(id) {
                r.observed[id] = Some(Observed::Secret(st));
            } else {
                return Err(FactError(format!("batched secret record for request {id}")).into());
            }
        }
        for (id, req) in self.requests.iter().enumerate() {
            if let (Request::Packages(p), None) = (req, &r.observed[id]) {
                let state = r.dpkg.state(p).map_err(|error| ProbeError::Output {
                    request: Some(id),
                    error,
                })?;
                r.observed[id] = state.map(Observed::Dpkg);
            }
        }
        Ok(())
    }
}

/// The error of a probe whose output ended before its `@end` record.
fn unfinished() -> FactError {
    FactError("the probe did not finish (output ended early)".into())
}

/// What the records of one probe said, before the batched answers are settled.
struct Records {
    /// One entry per request, by id: None until answered.
    observed: Vec<Option<Observed>>,
    /// The `@end` record came.
    ended: bool,
    facts: HostFacts,
    journal: Vec<String>,
    lock: Option<lock::LockState>,
    system: Option<SystemFacts>,
    paths: path::Batch,
    dpkg: apt::Batch,
    secrets: secret::Batch,
}

impl Records {
    fn new(requests: usize) -> Self {
        Self {
            observed: vec![None; requests],
            ended: false,
            facts: HostFacts::default(),
            journal: Vec::new(),
            lock: None,
            system: None,
            paths: path::Batch::default(),
            dpkg: apt::Batch::default(),
            secrets: secret::Batch::default(),
        }
    }
}

/// The answer to one request, parsed by the fact that asked it.
fn parse_answer(req: &Request, fields: &[&str]) -> Result<Observed, FactError> {
    match req {
        Request::Path(_) => path::parse(fields).map(Observed::Path),
        Request::Guard { .. } => guard::parse(fields).map(Observed::Guard),
        Request::User(_) => account::parse_user(fields).map(Observed::User),
        Request::Group(_) => account::parse_group(fields).map(Observed::Group),
        Request::Secret { .. } => secret::parse(fields).map(Observed::Secret),
        Request::Packages(p) => apt::parse(fields, p).map(Observed::Dpkg),
        Request::Firewall(_) => firewall::parse(fields).map(Observed::Firewall),
        Request::Git(_) => git::parse(fields).map(Observed::Git),
        Request::Compose(_) => compose::parse(fields).map(Observed::Compose),
        Request::Service(_) => service::parse(fields).map(Observed::Service),
        Request::Image(_) => image::parse(fields).map(Observed::Image),
        Request::Fetch(_) => fetch::parse(fields).map(Observed::Fetch),
        Request::Leftovers(_) => path::parse_leftovers(fields).map(Observed::Leftovers),
    }
}

/// Parsed probe output.
#[derive(Debug)]
pub struct ProbeResult {
    /// One entry per request, by id.
    pub observed: Vec<Observed>,
    pub preflight: preflight::Preflight,
    /// The host's facts, when asked for.
    pub facts: Option<HostFacts>,
    /// Handlers pending from an earlier run, by name.
    pub journal: Vec<String>,
    /// The apply lock, when the script took it.
    pub lock: Option<lock::LockState>,
    /// Memory, CPUs and uptime ([`ProbeScript::host_report`] only).
    pub system: Option<SystemFacts>,
    /// What the target lacks that every plan needs (only a `host_report` gets this far
    /// with any).
    pub problems: Vec<String>,
}

/// Shell function `claw_physdir PATH`: prints the physical directory PATH leads to, resolved
/// component by component as `realpath` does (each link's target spliced into the remaining
/// components, absolute or relative, links inside link targets too; at most 40 links), or fails
/// if a link on the way could be changed by another account than root: every link met must be
/// root's, in a directory that is root's and writable by nobody else (not by its group, not by
/// others: a sticky world-writable directory such as /tmp is refused too). That is the case of
/// merged-usr's `/lib -> usr/lib`, `/var/run -> /run`, or a link an administrator made to a
/// data volume. Only called when a path is reached through a link (see `resource::enter_dir`).
pub(crate) const PHYSDIR_FN: &str = r#"claw_physdir() {
  _r=$1; _c=; _n=0
  while [ -n "$_r" ]; do
    _h=${_r%%/*}
    case $_r in */*) _r=${_r#*/};; *) _r=;; esac
    case $_h in ''|.) continue;; ..) _c=${_c%/*}; continue;; esac
    if [ -L "$_c/$_h" ]; then
      _n=$((_n + 1)); [ "$_n" -le 40 ] || return 1
      set -- $(stat -c '%u %a' -- "$_c/$_h" "${_c:-/}") || return 1
      [ "$#" = 4 ] && [ "$1" = 0 ] && [ "$3" = 0 ] && [ "$((0$4 & 022))" = 0 ] || return 1
      _t=$(readlink -- "$_c/$_h") && [ -n "$_t" ] || return 1
      case $_t in /*) _c=;; esac
      _r=$_t/$_r
    else _c=$_c/$_h
    fi
  done
  printf '%s\n' "${_c:-/}"
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_locally_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "hello\n").unwrap();
        let mut p = ProbeScript::default();
        let a = p.add(Request::Path(f.to_str().unwrap().into()));
        let b = p.add(Request::Path(
            dir.path().join("missing dir/x").to_str().unwrap().into(),
        ));
        let c = p.add(Request::Guard {
            creates: Some(f.to_str().unwrap().into()),
            unless: None,
        });
        let d = p.add(Request::Guard {
            creates: None,
            unless: Some("false".into()),
        });
        let e = p.add(Request::Path(dir.path().to_str().unwrap().into()));
        p.add_upload_dir(dir.path().join("new/sub").to_str().unwrap());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(p.script())
            .output()
            .unwrap();
        let r = p.parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        match &r.observed[a] {
            Observed::Path(PathState::File { sha256, size, .. }) => {
                assert_eq!(
                    sha256,
                    "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
                );
                assert_eq!(*size, 6);
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(r.observed[b], Observed::Path(PathState::Absent));
        assert_eq!(r.observed[c], Observed::Guard(GuardState::CreatesExists));
        assert_eq!(r.observed[d], Observed::Guard(GuardState::MustRun));
        assert!(matches!(
            r.observed[e],
            Observed::Path(PathState::Dir { .. })
        ));
        assert!(r.preflight.sha256sum);
        assert!(r.preflight.free_kb[0] > 0);
    }

    /// The leftovers of interrupted uploads in a directory: only our directories of the exact
    /// name pattern (not a link to one, not a file, not other names); none in a directory
    /// that does not exist, or in `/`.
    #[test]
    fn leftovers_run_locally() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a dir '$(x)'");
        std::fs::create_dir(&d).unwrap();
        for n in [
            ".claw-provision.AbCd1234",
            ".claw-provision.00000000",
            ".claw-provision.TooLong12",
        ] {
            std::fs::create_dir(d.join(n)).unwrap();
        }
        std::fs::write(d.join(".claw-provision.FileFile"), "").unwrap();
        std::os::unix::fs::symlink(dir.path(), d.join(".claw-provision.LinkLink")).unwrap();
        let mut p = ProbeScript::default();
        let a = p.add(Request::Leftovers(d.to_str().unwrap().into()));
        let b = p.add(Request::Leftovers(
            d.join("missing").to_str().unwrap().into(),
        ));
        let c = p.add(Request::Path(d.join("f").to_str().unwrap().into()));
        let e = p.add(Request::Leftovers(format!("{}/", d.to_str().unwrap())));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(p.script())
            .output()
            .unwrap();
        let r = p.parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        let want = Observed::Leftovers(vec![
            ".claw-provision.00000000".into(),
            ".claw-provision.AbCd1234".into(),
        ]);
        assert_eq!(r.observed[a], want);
        assert_eq!(r.observed[b], Observed::Leftovers(vec![]));
        assert_eq!(r.observed[c], Observed::Path(PathState::Absent));
        assert_eq!(r.observed[e], want);
        // Without a leftovers request, no function for it.
        let mut q = ProbeScript::default();
        q.add(Request::Path("/x".into()));
        assert!(!q.script().contains("claw_leftovers"));
    }

    /// Paths of every kind, with names the batch must keep apart (spaces, a newline, quotes,
    /// a backslash), and free space of directories; then one file made unreadable so that the
    /// batch falls back to one record per path, with the same answers.
    #[test]
    fn batched_paths_and_their_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let names = ["a b", "new\nline", "q'\"$(x)`", "back\\slash", "empty"];
        for (i, n) in names.iter().enumerate() {
            std::fs::write(d.join(n), "x".repeat(i)).unwrap();
        }
        std::fs::create_dir(d.join("sub dir")).unwrap();
        std::os::unix::fs::symlink("a b", d.join("link")).unwrap();
        let mut p = ProbeScript::default();
        let mut ids = vec![];
        for n in names.iter().chain(&["sub dir", "link", "absent"]) {
            ids.push(p.add(Request::Path(d.join(n).to_str().unwrap().into())));
            p.add(Request::Guard {
                creates: None,
                unless: Some("true".into()),
            });
        }
        p.add_upload_dir(d.join("sub dir/x/y").to_str().unwrap());
        p.add_upload_dir(d.to_str().unwrap());
        let run = || {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(p.script())
                .output()
                .unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            (p.parse(&text).unwrap(), text)
        };
        let (r, text) = run();
        assert!(text.contains("@paths\tfffffdla\n"), "{text}");
        for (i, n) in names.iter().enumerate() {
            let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest("x".repeat(i)));
            match &r.observed[ids[i]] {
                Observed::Path(PathState::File { sha256, size, .. }) => {
                    assert_eq!((sha256, *size), (&want, i as u64), "{n}");
                }
                o => panic!("{n}: {o:?}"),
            }
        }
        assert!(matches!(
            r.observed[ids[5]],
            Observed::Path(PathState::Dir { .. })
        ));
        assert_eq!(r.observed[ids[6]], Observed::Path(PathState::Link));
        assert_eq!(r.observed[ids[7]], Observed::Path(PathState::Absent));
        assert_eq!(r.preflight.free_kb.len(), 2);
        assert!(r.preflight.free_kb.iter().all(|k| *k > 0));
        // A sha256sum that fails when given file names (as when a file vanished or cannot be
        // read meanwhile): the batch gives up, every path answers on its own, the same.
        let bin = d.join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(
            bin.join("sha256sum"),
            "#!/bin/sh\n[ $# -eq 0 ] || exit 1\nexec /usr/bin/sha256sum\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            bin.join("sha256sum"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("PATH={}:$PATH\n{}", bin.display(), p.script()))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains("@paths"), "{text}");
        let fallback = p.parse(&text).unwrap();
        assert_eq!(fallback.observed, r.observed);
    }

    /// The `facts` command's probe, run here: facts, system facts and free space, with no
    /// journal, lock or secret in the script; a missing tool is a problem, not a failure.
    #[test]
    fn host_report_runs_locally() {
        let p = ProbeScript::host_report(&["/", "/tmp"]);
        let script = p.script();
        for absent in [
            "@journal",
            "@lock",
            "claw_secret",
            "/var/lib/claw-provision",
        ] {
            assert!(!script.contains(absent), "{absent} in {script}");
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let r = p.parse(&String::from_utf8(out.stdout).unwrap()).unwrap();
        assert!(r.facts.as_ref().is_some_and(HostFacts::complete));
        assert!(r.system.as_ref().unwrap().mem_total_kb.unwrap() > 0);
        assert_eq!(r.preflight.free_kb.len(), 2);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert!(r.journal.is_empty() && r.lock.is_none() && r.observed.is_empty());
        let no_sha = "@pre-sha256sum\tno\n@pre-stat\tyes\n@pre-free\t0\t/dev/x 10 5 5 50% /\n\
            @pre-free\t1\t/dev/x 10 5 5 50% /\n@fact-os\tdebian\t13\ttrixie\t\n\
            @fact-arch\tx86_64\tamd64\n@fact-kernel\t6.1\n@fact-init\tsystemd\n\
            @fact-hostname\th\n@fact-docker\tno\t\n@fact-compose\t\n@sys\t1\t1\t0\t1\n@end\n";
        let r = p.parse(no_sha).unwrap();
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0].contains("sha256sum"));
        // Without its @sys record the answer is incomplete.
        assert!(p.parse(&no_sha.replace("@sys\t1\t1\t0\t1\n", "")).is_err());
        // A plan's probe still fails on the same answer.
        let mut q = ProbeScript::default();
        q.add(Request::Path("/x".into()));
        q.add_upload_dir("/");
        q.add_upload_dir("/tmp");
        assert!(matches!(q.parse(no_sha), Err(ProbeError::Preflight(_))));
    }

    #[test]
    fn batched_path_records_must_add_up() {
        let mut p = ProbeScript::default();
        p.add(Request::Path("/a".into()));
        p.add(Request::Path("/b".into()));
        let ok = "@pre-sha256sum\tyes\n@pre-stat\tyes\n@paths\tfa\n@ps\t644 a a 0 0 1\tregular file\n@ph\t";
        let sha = "a".repeat(64);
        assert!(p.parse(&format!("{ok}{sha}\n@end\n")).is_ok());
        for bad in [
            format!("{ok}{sha}\n@ph\t{sha}\n@end\n"),
            "@paths\tfa\n@ps\t644 a a 0 0 1\tregular file\n@end\n".to_string(),
            "@paths\ta\n@end\n".to_string(),
            format!("@paths\tfa\n@ps\t755 a a 0 0 1\tdirectory\n@ph\t{sha}\n@end\n"),
            "@paths\tza\n@end\n".to_string(),
        ] {
            assert!(p.parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflight_problems_come_first() {
        let mut p = ProbeScript::default();
        p.add(Request::Path("/x".into()));
        let missing =
            "@pre-sha256sum\tno\n@pre-stat\tyes\n@0\tfile\t644 a a 0 0 1\tunreadable\n@end\n";
        assert!(
            matches!(p.parse(missing), Err(ProbeError::Preflight(m)) if m.contains("sha256sum"))
        );
        let bad = "@pre-sha256sum\tyes\n@pre-stat\tyes\n@0\tweird\n@end\n";
        assert!(matches!(
            p.parse(bad),
            Err(ProbeError::Output {
                request: Some(0),
                ..
            })
        ));
    }

    #[test]
    fn truncated_output_is_an_error() {
        let mut p = ProbeScript::default();
        p.add(Request::Path("/x".into()));
        assert!(
            p.parse("@0\tabsent\n")
                .unwrap_err()
                .to_string()
                .contains("did not finish")
        );
        assert!(
            p.parse("@pre-sha256sum\tyes\n@pre-stat\tyes\n@end\n")
                .unwrap_err()
                .to_string()
                .contains("no answer")
        );
    }
}
