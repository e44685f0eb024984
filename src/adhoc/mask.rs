//! Masking the become password in what a host prints, whole or cut into chunks.

/// Masks a secret in a stream cut into chunks: holds back what could be the start of the
/// secret until the next chunk tells.
pub(crate) struct StreamMask<'a> {
    secret: Option<&'a [u8]>,
    pending: Vec<u8>,
}

impl<'a> StreamMask<'a> {
    pub(crate) fn new(secret: Option<&'a [u8]>) -> Self {
        Self {
            secret: secret.filter(|s| !s.is_empty()),
            pending: Vec::new(),
        }
    }

    /// The bytes that can be shown now (masked).
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<u8> {
        let Some(s) = self.secret else {
            return data.to_vec();
        };
        self.pending.extend_from_slice(data);
        let masked = mask_bytes(&self.pending, s);
        // Keep back the longest end that is a proper prefix of the secret.
        let keep = (1..s.len())
            .rev()
            .find(|&k| masked.len() >= k && masked.ends_with(&s[..k]))
            .unwrap_or(0);
        let (now, later) = masked.split_at(masked.len() - keep);
        self.pending = later.to_vec();
        now.to_vec()
    }

    /// What was held back at the end of the stream.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

/// [`mask`] for bytes.
fn mask_bytes(data: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() || data.len() < secret.len() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(secret) {
            out.extend_from_slice(b"***");
            i += secret.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Replaces every occurrence of `secret` in `data` by `***`.
pub(crate) fn mask(data: &[u8], secret: &str) -> Vec<u8> {
    mask_bytes(data, secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_a_password_cut_across_chunks() {
        let mut m = StreamMask::new(Some(b"labpass"));
        let mut out = Vec::new();
        for c in [&b"x lab"[..], b"pa", b"ss y la", b"bpas", b"t", b" lab"] {
            out.extend(m.feed(c));
        }
        out.extend(m.finish());
        assert_eq!(out, b"x *** y labpast lab");
        let mut none = StreamMask::new(None);
        assert_eq!(none.feed(b"abc"), b"abc");
    }

    #[test]
    fn masks_the_password() {
        assert_eq!(mask(b"a pw b pwpw", "pw"), b"a *** b ******");
        assert_eq!(mask(b"short", "longer secret"), b"short");
        assert_eq!(mask(b"x", ""), b"x");
    }
}
