//! `hosts`: the selected hosts with their connection settings.

use super::load::{load, select};
use super::*;

pub(super) fn hosts(
    a: &SelectArgs,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Outcome, Error> {
    let l = load(a, &StepFilter::default(), ssh)?;
    let hosts = select(&l, a)?;
    let ev = json::Events::default();
    for h in hosts {
        let keys: Vec<String> = h
            .identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        match a.output {
            Format::Text => report::out(&format!(
                "{}\t{}@{}:{}\tgroups={}\tkeys={}{}\tknown_hosts={} ({})\tbecome={}{}\n",
                h.name,
                h.user,
                h.address,
                h.port,
                h.groups.join(","),
                if keys.is_empty() { "agent,~/.ssh/id_*".into() } else { keys.join(",") },
                if h.identities_only { " (identities only)" } else { "" },
                h.known_hosts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
                h.host_key_policy.as_str(),
                if h.become_ { format!("sudo -u {}", h.become_user) } else { "no".into() },
                if h.jump.is_empty() { String::new() } else { format!("\tjump={}", jump_text(&h.jump)) },
            )),
            Format::Json => ev.emit(serde_json::json!({
                "event": "host", "host": h.name, "address": h.address, "port": h.port, "user": h.user,
                "groups": h.groups, "identity_files": keys, "known_hosts": h.known_hosts,
                "host_key_policy": h.host_key_policy, "become": h.become_, "become_user": h.become_user,
                "connect_timeout_s": h.connect_timeout.as_secs(), "command_timeout_s": h.command_timeout.as_secs(),
                "keepalive_interval_s": h.keepalive_interval.as_secs(), "identities_only": h.identities_only,
                "jump": h.jump.iter().map(|j| serde_json::json!({
                    "name": j.name, "address": j.address, "port": j.port, "user": j.user,
                    "identity_files": j.identity_files, "identities_only": j.identities_only,
                    "known_hosts": j.known_hosts, "host_key_policy": j.host_key_policy,
                })).collect::<Vec<_>>(),
            })),
        }
    }
    Ok(Outcome::Done)
}

/// Jump hosts as `user@address:port,...`.
pub(super) fn jump_text(jump: &[crate::inventory::JumpHost]) -> String {
    jump.iter()
        .map(|j| format!("{}@{}", j.user, crate::ssh::target_of(&j.address, j.port)))
        .collect::<Vec<_>>()
        .join(",")
}
