//! The `peers` argument of a `firewall` step: the addresses and networks ([`Net`]) its `from`
//! items name, an inventory host or group resolved through the template context. An item that
//! renders to an empty string names nothing, and so does an inventory group without hosts: a
//! peer left without sources is kept (the plan says `PORT from no source`) but opens nothing.

use super::{PeerArgs, StepError};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// One port open to some sources (none: the port stays closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub port: u16,
    /// Normalised, sorted, without entries covered by another one.
    pub v4: Vec<Net>,
    pub v6: Vec<Net>,
}

/// An address or network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Net {
    fn max_prefix(addr: &IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// Parses `10.0.0.1`, `10.0.0.0/24`, `fd00::/8`; host bits are cleared.
    pub fn parse(s: &str) -> Option<Net> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = Self::max_prefix(&addr);
        let prefix = match p {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max)?
            }
            Some(_) => return None,
        };
        Some(Net {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    fn contains(&self, other: &Net) -> bool {
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && self.prefix <= other.prefix
            && mask(other.addr, self.prefix) == self.addr
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix == Self::max_prefix(&self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

pub(super) fn lookup<'a>(ctx: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = ctx.get(path[0])?;
    for k in &path[1..] {
        v = v.get(*k)?;
    }
    Some(v)
}

/// The IP address of an inventory host, for a peer rule.
fn host_net(ctx: &Map<String, Value>, name: &str, port: u16) -> Result<Net, StepError> {
    let addr = lookup(ctx, &["inventory", "hosts", name, "address"])
        .and_then(Value::as_str)
        .unwrap_or_default();
    addr.parse::<IpAddr>()
        .ok()
        .and_then(|a| Net::parse(&a.to_string()))
        .ok_or_else(|| {
            StepError::arg(format!(
                "`peers` (port {port}): inventory host `{name}` has the address `{addr}`, not an IP address; give its IP address or network instead"
            ))
        })
}

/// Resolves one `from` item: an IP address/CIDR, an inventory host or an inventory group (a
/// group without hosts resolves to nothing).
fn resolve(ctx: &Map<String, Value>, item: &str, port: u16) -> Result<Vec<Net>, StepError> {
    let item = item.trim();
    if let Some(n) = Net::parse(item) {
        return Ok(vec![n]);
    }
    if lookup(ctx, &["inventory", "hosts", item]).is_some() {
        return Ok(vec![host_net(ctx, item, port)?]);
    }
    if let Some(members) = lookup(ctx, &["inventory", "groups", item]).and_then(Value::as_array) {
        return members
            .iter()
            .filter_map(Value::as_str)
            .map(|h| host_net(ctx, h, port))
            .collect();
    }
    Err(StepError::arg(format!(
        "`peers` (port {port}): `{item}` is neither an inventory host, an inventory group, an IP address nor a CIDR"
    )))
}

/// Sorted, deduplicated, without networks covered by another entry (nft refuses overlapping
/// elements in a set).
pub(super) fn minimal(mut nets: Vec<Net>) -> Vec<Net> {
    nets.sort_by_key(|n| (n.addr, n.prefix));
    nets.dedup();
    let all = nets.clone();
    nets.retain(|n| !all.iter().any(|o| o != n && o.contains(n)));
    nets
}

/// The rules of the `peers` argument (`args`, rendered for the host): each port's sources
/// resolved and merged (several entries for one port make one rule), without a port in
/// `ports`, open to everyone anyway. `from` entries rendered empty are dropped; a port left
/// without sources stays in the list, with none. A `from` list written empty is an error (it
/// can never name anything: a typo, not a choice of the host).
pub(super) fn peers(
    ctx: &Map<String, Value>,
    args: &[PeerArgs],
    ports: &[u16],
) -> Result<Vec<Peer>, StepError> {
    let mut peers: Vec<Peer> = vec![];
    for p in args {
        let port = p.port.resolve("peers")?;
        if p.from.is_empty() {
            return Err(StepError::arg(format!(
                "`peers` (port {port}): `from` is empty"
            )));
        }
        let mut nets = vec![];
        for item in p.from.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            nets.extend(resolve(ctx, item, port)?);
        }
        // Several entries for one port are merged.
        let peer = match peers.iter_mut().find(|q| q.port == port) {
            Some(q) => q,
            None => {
                peers.push(Peer {
                    port,
                    v4: vec![],
                    v6: vec![],
                });
                peers.last_mut().unwrap()
            }
        };
        for n in nets {
            if n.addr.is_ipv4() {
                peer.v4.push(n);
            } else {
                peer.v6.push(n);
            }
        }
    }
    for p in &mut peers {
        p.v4 = minimal(std::mem::take(&mut p.v4));
        p.v6 = minimal(std::mem::take(&mut p.v6));
    }
    // Ports open to everyone need no peer rule.
    peers.retain(|p| !ports.contains(&p.port));
    peers.sort_by_key(|p| p.port);
    Ok(peers)
}
