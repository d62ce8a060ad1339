//! Which signs of a guest failure the agent reports. A kernel panic is
//! followed by silence and a reboot, a hung guest's silence by the reset
//! that clears it: until the guest beats again they are one failure,
//! reported at the first sign. A reset the agent was told to do is no
//! failure at all. Pure: the agent feeds it what it saw.

/// What the agent saw of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// No heartbeat for the guest's limit (the agent looks only while a
    /// heartbeat came once and QEMU runs).
    Silent,
    /// The kernel's panic line on its console.
    PanicLine,
    /// QEMU says the guest reset.
    Reset,
    /// The controller ordered a reset (the next `Reset` is that one).
    ResetOrdered,
    /// The ordered reset could not be done.
    ResetFailed,
    /// A heartbeat: the guest is back.
    Heartbeat,
}

/// What the agent remembers of a guest's signs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watch {
    /// A failure was reported (or a reset was under way): later signs are
    /// the same failure until a heartbeat.
    reported: bool,
    reset_ordered: bool,
}

impl Watch {
    /// The watch after `sign`, and whether to report a new failure.
    pub fn on(self, sign: Sign) -> (Watch, bool) {
        match sign {
            Sign::Heartbeat => (Watch::default(), false),
            Sign::ResetOrdered | Sign::ResetFailed => (
                Watch {
                    reset_ordered: sign == Sign::ResetOrdered,
                    ..self
                },
                false,
            ),
            Sign::Reset => {
                let report = !self.reported && !self.reset_ordered;
                // Till its next heartbeat, a panic line read from its
                // console, or its silence, is this reset's.
                (
                    Watch {
                        reported: true,
                        reset_ordered: false,
                    },
                    report,
                )
            }
            Sign::Silent | Sign::PanicLine => (
                Watch {
                    reported: true,
                    ..self
                },
                !self.reported,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNS: [Sign; 6] = [
        Sign::Silent,
        Sign::PanicLine,
        Sign::Reset,
        Sign::ResetOrdered,
        Sign::ResetFailed,
        Sign::Heartbeat,
    ];

    /// Every sequence of up to five signs: between heartbeats at most one
    /// report; the first sign of trouble is reported unless it is the
    /// reset that was ordered; nothing is reported for an ordered reset.
    #[test]
    fn every_sequence_reports_one_failure_per_episode() {
        fn all(len: usize) -> Vec<Vec<Sign>> {
            if len == 0 {
                return vec![vec![]];
            }
            all(len - 1)
                .into_iter()
                .flat_map(|s| {
                    SIGNS.iter().map(move |&x| {
                        let mut t = s.clone();
                        t.push(x);
                        t
                    })
                })
                .collect()
        }
        let seqs: Vec<Vec<Sign>> = (0..=5).flat_map(all).collect();
        let mut n = 0;
        for seq in &seqs {
            let mut w = Watch::default();
            let (mut reports, mut ordered, mut trouble) = (0, false, false);
            for &s in seq {
                let (next, report) = w.on(s);
                match s {
                    Sign::Heartbeat => {
                        (reports, ordered, trouble) = (0, false, false);
                        assert!(!report);
                    }
                    Sign::ResetOrdered | Sign::ResetFailed => {
                        ordered = s == Sign::ResetOrdered;
                        assert!(!report);
                    }
                    Sign::Reset if ordered => {
                        assert!(!report, "an ordered reset reported: {seq:?}");
                        ordered = false;
                        trouble = true;
                    }
                    Sign::Reset | Sign::Silent | Sign::PanicLine => {
                        assert_eq!(report, !trouble, "{seq:?}");
                        trouble = true;
                    }
                }
                reports += usize::from(report);
                assert!(reports <= 1, "two reports in one episode: {seq:?}");
                w = next;
            }
            n += 1;
        }
        assert_eq!(n, (0..=5).map(|k| SIGNS.len().pow(k)).sum::<usize>());
    }
}
