//! The network element's pipeline: each frame a VM sends or receives passes
//! every stage in order. A stage passes a frame on, holds it (and releases it
//! later, e.g. when a replication epoch commits), or drops it with a reason.
//! Nothing is dropped without a counted reason.

use crate::frame::FrameInfo;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Sent by the VM, towards the network.
    FromGuest,
    /// From the network, towards the VM.
    ToGuest,
}

/// What a stage does with a frame. Frames are borrowed: the element reads
/// them into its own buffers and writes them out from there, so the hot
/// path allocates and copies nothing; a stage that holds one keeps a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The stage kept a copy; it comes back through [`Stage::released`].
    Held,
    Drop(&'static str),
}

/// How much the element can take now of what stages release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Room {
    /// Frames, and bytes of them, the queue towards the VM still takes
    /// (none while no VM is connected).
    pub frames: usize,
    pub bytes: usize,
}

impl Room {
    /// No limit (tests, and stages that release little).
    pub const ANY: Room = Room {
        frames: usize::MAX,
        bytes: usize::MAX,
    };
    pub const NONE: Room = Room {
        frames: 0,
        bytes: 0,
    };

    /// Whether a frame of `len` bytes fits; if so it is counted.
    pub fn take(&mut self, len: usize) -> bool {
        let need = len + FRAME_OVERHEAD;
        if self.frames == 0 || self.bytes < need {
            return false;
        }
        self.frames -= 1;
        self.bytes -= need;
        true
    }
}

/// Bytes the queue towards the VM adds to each frame (its length prefix).
const FRAME_OVERHEAD: usize = 4;

pub trait Stage: Send {
    fn on_frame(
        &mut self,
        dir: Direction,
        info: Option<&FrameInfo>,
        frame: &[u8],
        now: Instant,
    ) -> Verdict;
    /// Frames held earlier that may go on now, in order.
    fn released(&mut self, _now: Instant, _room: Room) -> Vec<(Direction, Vec<u8>)> {
        Vec::new()
    }
    /// Whether it has frames to release without a new frame or tick (the
    /// element polls again as soon as it can take them).
    fn wants_release(&self) -> bool {
        false
    }
}

#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    pub drops: BTreeMap<&'static str, u64>,
    /// A stage held a frame since the last [`Pipeline::poll_released`]:
    /// it may have something to release at once (a forwarded frame).
    held_since_poll: bool,
}

impl Pipeline {
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        Pipeline {
            stages,
            drops: BTreeMap::new(),
            held_since_poll: false,
        }
    }

    pub fn count_drop(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_default() += 1;
    }

    /// Runs a frame through the stages from `from` on; true if every
    /// stage passed it.
    fn run_from(&mut self, from: usize, dir: Direction, frame: &[u8], now: Instant) -> bool {
        // Parsed once per frame: stages do not change frames they pass.
        let info = crate::frame::parse(frame);
        for i in from..self.stages.len() {
            match self.stages[i].on_frame(dir, info.as_ref(), frame, now) {
                Verdict::Pass => {}
                Verdict::Held => {
                    self.held_since_poll = true;
                    return false;
                }
                Verdict::Drop(reason) => {
                    self.count_drop(reason);
                    return false;
                }
            }
        }
        true
    }

    /// Processes one frame: true if it is to be delivered now, as it is.
    /// Frames a stage releases come from [`Pipeline::poll_released`].
    pub fn process(&mut self, dir: Direction, frame: &[u8], now: Instant) -> bool {
        self.run_from(0, dir, frame, now)
    }

    /// Whether a stage held a frame since the last poll (poll at once).
    pub fn release_due(&self) -> bool {
        self.held_since_poll || self.stages.iter().any(|s| s.wants_release())
    }

    /// Frames that stages released, after the remaining stages ran on them.
    pub fn poll_released(&mut self, now: Instant, room: Room) -> Vec<(Direction, Vec<u8>)> {
        self.held_since_poll = false;
        let mut out: Vec<(Direction, Vec<u8>)> = Vec::new();
        for i in 0..self.stages.len() {
            let mut left = room;
            for (_, f) in out.iter().filter(|(d, _)| *d == Direction::ToGuest) {
                left.take(f.len());
            }
            for (dir, f) in self.stages[i].released(now, left) {
                if self.run_from(i + 1, dir, &f, now) {
                    out.push((dir, f));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds every frame from the guest until `open` is set.
    struct Gate {
        open: bool,
        held: Vec<(Direction, Vec<u8>)>,
    }

    impl Stage for Gate {
        fn on_frame(
            &mut self,
            dir: Direction,
            _: Option<&FrameInfo>,
            frame: &[u8],
            _: Instant,
        ) -> Verdict {
            if dir == Direction::FromGuest && !self.open {
                self.held.push((dir, frame.to_vec()));
                Verdict::Held
            } else {
                Verdict::Pass
            }
        }
        fn released(&mut self, _: Instant, _: crate::stage::Room) -> Vec<(Direction, Vec<u8>)> {
            if self.open {
                std::mem::take(&mut self.held)
            } else {
                Vec::new()
            }
        }
    }

    struct DropShort;
    impl Stage for DropShort {
        fn on_frame(
            &mut self,
            _: Direction,
            info: Option<&FrameInfo>,
            _: &[u8],
            _: Instant,
        ) -> Verdict {
            if info.is_none() {
                Verdict::Drop("runt frame")
            } else {
                Verdict::Pass
            }
        }
    }

    #[test]
    fn pass_hold_release_drop() {
        let now = Instant::now();
        let mut p = Pipeline::new(vec![
            Box::new(Gate {
                open: false,
                held: vec![],
            }),
            Box::new(DropShort),
        ]);
        let frame = vec![0u8; 60];
        assert!(!p.release_due());
        assert!(!p.process(Direction::FromGuest, &frame, now));
        assert!(p.release_due(), "a frame was held");
        assert!(p.poll_released(now, Room::ANY).is_empty());
        assert!(!p.release_due());
        assert!(p.process(Direction::ToGuest, &frame, now));
        assert!(!p.process(Direction::ToGuest, &[1, 2], now));
        assert_eq!(p.drops.get("runt frame"), Some(&1));
        // Opening the gate is a stage-internal decision; simulate it.
        let mut opened = Pipeline::new(vec![
            Box::new(Gate {
                open: true,
                held: vec![
                    (Direction::FromGuest, frame.clone()),
                    (Direction::FromGuest, vec![9]),
                ],
            }),
            Box::new(DropShort),
        ]);
        let out = opened.poll_released(now, Room::ANY);
        assert_eq!(out, vec![(Direction::FromGuest, frame)]);
        assert_eq!(opened.drops.get("runt frame"), Some(&1));
    }
}
