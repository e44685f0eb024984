//! The nftables ruleset text of a `firewall` step, and the minimal one its rollback falls back
//! to.

use super::Peer;

/// One transaction that creates the table if missing, deletes it, and opens its definition
/// again with the input chain's policy and what every ruleset accepts (loopback, neighbour
/// discovery, replies), so that loading it replaces exactly this table, atomically.
fn table_head(comment: &str, table: &str) -> String {
    format!(
        "# {comment}\n\
         table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept\n\
         \t\tct state established,related accept\n"
    )
}

/// What the rollback loads when the previous table cannot be loaded back: the SSH port open to
/// everyone (and loopback, replies, neighbour discovery), everything else dropped.
pub(crate) fn minimal_ruleset(table: &str, ssh_port: u64) -> String {
    let mut s = table_head(
        "claw-provision firewall rollback: the saved ruleset could not be loaded back",
        table,
    );
    s.push_str(&format!("\t\ttcp dport {ssh_port} accept\n\t}}\n}}\n"));
    s
}

/// The ruleset text of a `firewall` step (see [`table_head`]).
pub(crate) fn ruleset(
    table: &str,
    ports: &[u16],
    peers: &[Peer],
    icmp: bool,
    containers: bool,
) -> String {
    let mut s = table_head(
        "managed by claw-provision (firewall step); changes made here are overwritten",
        table,
    );
    s.push_str("\t\tct state invalid drop\n");
    if icmp {
        s.push_str("\t\ticmp type echo-request accept\n");
        s.push_str("\t\ticmpv6 type echo-request accept\n");
    }
    s.push_str("\t\tip6 saddr fe80::/10 udp dport 546 accept\n");
    s.push_str(&format!("\t\ttcp dport {} accept\n", set(ports)));
    for p in peers {
        if !p.v4.is_empty() {
            s.push_str(&format!(
                "\t\tip saddr {} tcp dport {} accept\n",
                set(&p.v4),
                p.port
            ));
        }
        if !p.v6.is_empty() {
            s.push_str(&format!(
                "\t\tip6 saddr {} tcp dport {} accept\n",
                set(&p.v6),
                p.port
            ));
        }
    }
    s.push_str("\t}\n");
    if containers {
        s.push_str(
            "\n\tchain forward {\n\
             \t\ttype filter hook forward priority filter - 10; policy accept;\n\
             \t\tct state new ct status dnat jump published\n\
             \t}\n\
             \n\tchain published {\n",
        );
        // One rule per port: `ct original proto-dst` with an anonymous set lacks a data type.
        for p in ports {
            s.push_str(&format!(
                "\t\tmeta l4proto tcp ct original proto-dst {p} return\n"
            ));
        }
        for p in peers {
            if !p.v4.is_empty() {
                s.push_str(&format!(
                    "\t\tip saddr {} meta l4proto tcp ct original proto-dst {} return\n",
                    set(&p.v4),
                    p.port
                ));
            }
            if !p.v6.is_empty() {
                s.push_str(&format!(
                    "\t\tip6 saddr {} meta l4proto tcp ct original proto-dst {} return\n",
                    set(&p.v6),
                    p.port
                ));
            }
        }
        s.push_str("\t\tdrop\n\t}\n");
    }
    s.push_str("}\n");
    s
}

fn set<T: std::fmt::Display>(items: &[T]) -> String {
    if items.len() == 1 {
        items[0].to_string()
    } else {
        let v: Vec<String> = items.iter().map(ToString::to_string).collect();
        format!("{{ {} }}", v.join(", "))
    }
}
