//! Bounded capture of a remote command's output: every byte the client reads from a host goes
//! through a [`Capture`] (kept whole up to a limit, or its two ends) or is streamed on to a
//! sink; nothing a host prints can grow the client's memory without bound.

use std::collections::VecDeque;

/// How much of one output stream (stdout or stderr) the client keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Everything, up to `max` bytes; a command that prints more is stopped and the call fails
    /// ([`super::SshError::OutputTooLarge`]). For output that is parsed (probes, checks).
    Whole { max: usize },
    /// The first `head` and the last `tail` bytes; what lies between is counted and dropped.
    /// For output that is shown or explains a failure.
    Ends { head: usize, tail: usize },
}

/// What the client keeps of a command's stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub stdout: Keep,
    pub stderr: Keep,
}

const MIB: usize = 1024 * 1024;

impl Limits {
    /// Probes and other parsed output: a probe prints a few KiB per step (the current
    /// contents fetched for diffs have their own bound); 16 MiB is far beyond any honest answer.
    pub(crate) const PROBE: Limits = Limits {
        stdout: Keep::Whole { max: 16 * MIB },
        stderr: Keep::Ends {
            head: 16 * 1024,
            tail: 48 * 1024,
        },
    };
    /// Steps' commands: their output is shown (`output = true`) or explains a failure.
    pub(crate) const COMMAND: Limits = Limits {
        stdout: Keep::Ends {
            head: 256 * 1024,
            tail: 256 * 1024,
        },
        stderr: Keep::Ends {
            head: 64 * 1024,
            tail: 64 * 1024,
        },
    };
}

/// Where bytes were dropped from a stream kept by [`Keep::Ends`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Offset in the kept bytes where the dropped ones were.
    pub at: usize,
    /// How many bytes were dropped.
    pub bytes: u64,
}

/// One stream being captured.
#[derive(Debug)]
pub(crate) struct Capture {
    keep: Keep,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

/// [`Capture::push`] in [`Keep::Whole`] mode went over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overflow {
    pub max: usize,
}

impl Capture {
    pub(crate) fn new(keep: Keep) -> Self {
        Self {
            keep,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Adds bytes read from the stream.
    pub(crate) fn push(&mut self, mut data: &[u8]) -> Result<(), Overflow> {
        match self.keep {
            Keep::Whole { max } => {
                if self.head.len() + data.len() > max {
                    return Err(Overflow { max });
                }
                self.head.extend_from_slice(data);
            }
            Keep::Ends { head, tail } => {
                let room = head.saturating_sub(self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..room]);
                data = &data[room..];
                if data.is_empty() {
                    return Ok(());
                }
                if data.len() >= tail {
                    self.dropped += (self.tail.len() + data.len() - tail) as u64;
                    self.tail.clear();
                    self.tail.extend(&data[data.len() - tail..]);
                } else {
                    self.tail.extend(data);
                    let over = self.tail.len().saturating_sub(tail);
                    self.tail.drain(..over);
                    self.dropped += over as u64;
                }
            }
        }
        Ok(())
    }

    /// The bytes kept at the start of the stream (all of them with [`Keep::Whole`]).
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// How many more bytes go to the head (with [`Keep::Ends`]; 0 otherwise).
    pub(crate) fn head_room(&self) -> usize {
        match self.keep {
            Keep::Ends { head, .. } => head.saturating_sub(self.head.len()),
            Keep::Whole { .. } => 0,
        }
    }

    /// The kept bytes and where bytes were dropped (if any were).
    pub(crate) fn finish(self) -> (Vec<u8>, Option<Dropped>) {
        let at = self.head.len();
        let mut v = self.head;
        v.extend(self.tail);
        let dropped = (self.dropped > 0).then_some(Dropped {
            at,
            bytes: self.dropped,
        });
        (v, dropped)
    }
}

/// The kept bytes as text (invalid UTF-8 replaced), with a line saying how many bytes were
/// dropped where they were dropped. `stream` names the stream ("stdout", "stderr"), `hint`
/// says how to get them all. The lines cut by the drop are dropped whole (so no part of a
/// value that masking would have recognised whole is shown).
pub(crate) fn shown(kept: &[u8], dropped: Option<Dropped>, stream: &str, hint: &str) -> String {
    match dropped {
        None => String::from_utf8_lossy(kept).into_owned(),
        Some(d) => {
            let at = d.at.min(kept.len());
            let (head, tail) = kept.split_at(at);
            let head_end = head.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            let tail_start = tail
                .iter()
                .position(|b| *b == b'\n')
                .map_or(tail.len(), |i| i + 1);
            let bytes = d.bytes + (head.len() - head_end + tail_start) as u64;
            let mut s = String::from_utf8_lossy(&head[..head_end]).into_owned();
            s.push_str(&format!(
                "[claw-provision: {bytes} bytes of {stream} not kept here{hint}]\n"
            ));
            s.push_str(&String::from_utf8_lossy(&tail[tail_start..]));
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_fails_over_its_limit() {
        let mut c = Capture::new(Keep::Whole { max: 4 });
        c.push(b"ab").unwrap();
        c.push(b"cd").unwrap();
        assert_eq!(c.push(b"e"), Err(Overflow { max: 4 }));
        assert_eq!(c.finish(), (b"abcd".to_vec(), None));
    }

    #[test]
    fn ends_keep_head_and_tail() {
        let mut c = Capture::new(Keep::Ends { head: 3, tail: 4 });
        c.push(b"ab").unwrap();
        assert_eq!(
            Capture::new(Keep::Ends { head: 3, tail: 4 }).finish().1,
            None
        );
        for b in b"cdefghij".chunks(1) {
            c.push(b).unwrap();
        }
        let (v, d) = c.finish();
        assert_eq!(v, b"abcghij");
        assert_eq!(d, Some(Dropped { at: 3, bytes: 3 }));
        // A big chunk at once, and nothing dropped when it all fits.
        let mut c = Capture::new(Keep::Ends { head: 2, tail: 2 });
        c.push(b"0123456789").unwrap();
        c.push(b"x").unwrap();
        let (v, d) = c.finish();
        assert_eq!(v, b"019x");
        assert_eq!(d, Some(Dropped { at: 2, bytes: 7 }));
        let mut c = Capture::new(Keep::Ends { head: 2, tail: 2 });
        c.push(b"0123").unwrap();
        assert_eq!(c.finish(), (b"0123".to_vec(), None));
    }

    #[test]
    fn ends_stay_bounded_on_much_input() {
        let mut c = Capture::new(Keep::Ends { head: 10, tail: 10 });
        let chunk = vec![b'z'; 32 * 1024];
        for _ in 0..1000 {
            c.push(&chunk).unwrap();
            assert!(c.head.len() + c.tail.len() <= 20);
        }
        let (v, d) = c.finish();
        assert_eq!(v.len(), 20);
        assert_eq!(d.unwrap().bytes, 1000 * 32 * 1024 - 20);
    }

    #[test]
    fn shown_marks_the_cut() {
        assert_eq!(shown(b"abc", None, "stdout", ""), "abc");
        // The lines the cut goes through are dropped whole.
        let s = shown(
            b"one\nhead-part2tail-part\ntwo\n",
            Some(Dropped { at: 14, bytes: 99 }),
            "stdout",
            "; see X",
        );
        assert_eq!(
            s,
            "one\n[claw-provision: 119 bytes of stdout not kept here; see X]\ntwo\n"
        );
        let s = shown(b"zzzz", Some(Dropped { at: 2, bytes: 6 }), "stderr", "");
        assert_eq!(s, "[claw-provision: 10 bytes of stderr not kept here]\n");
    }
}
