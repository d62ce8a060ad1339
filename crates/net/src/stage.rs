//! The network element's pipeline: each frame a VM sends or receives passes
//! every stage in order. A stage passes a frame on, holds it (and releases it
//! later, e.g. when a replication epoch commits), or drops it with a reason.
//! Nothing is dropped without a counted reason.

use crate::frame::FrameInfo;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Sent by the VM, towards the network.
    FromGuest,
    /// From the network, towards the VM.
    ToGuest,
}

pub enum Verdict {
    Pass(Vec<u8>),
    /// The stage keeps the frame; it comes back through [`Stage::released`].
    Held,
    Drop(&'static str),
}

pub trait Stage: Send {
    fn on_frame(&mut self, dir: Direction, info: Option<&FrameInfo>, frame: Vec<u8>) -> Verdict;
    /// Frames held earlier that may go on now, in order.
    fn released(&mut self) -> Vec<(Direction, Vec<u8>)> {
        Vec::new()
    }
}

#[derive(Default)]
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    pub drops: BTreeMap<&'static str, u64>,
}

impl Pipeline {
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        Pipeline {
            stages,
            drops: BTreeMap::new(),
        }
    }

    pub fn count_drop(&mut self, reason: &'static str) {
        *self.drops.entry(reason).or_default() += 1;
    }

    /// Runs a frame through the stages from `from` on; returns it if every
    /// stage passed it.
    fn run_from(&mut self, from: usize, dir: Direction, mut frame: Vec<u8>) -> Option<Vec<u8>> {
        // Parsed once per frame: stages pass frames on unchanged.
        let info = crate::frame::parse(&frame);
        for i in from..self.stages.len() {
            match self.stages[i].on_frame(dir, info.as_ref(), frame) {
                Verdict::Pass(f) => frame = f,
                Verdict::Held => return None,
                Verdict::Drop(reason) => {
                    self.count_drop(reason);
                    return None;
                }
            }
        }
        Some(frame)
    }

    /// Processes one frame; returns what is to be delivered now (the frame
    /// itself if it passed, plus anything a stage released meanwhile).
    pub fn process(&mut self, dir: Direction, frame: Vec<u8>) -> Vec<(Direction, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(f) = self.run_from(0, dir, frame) {
            out.push((dir, f));
        }
        out.extend(self.poll_released());
        out
    }

    /// Frames that stages released, after the remaining stages ran on them.
    pub fn poll_released(&mut self) -> Vec<(Direction, Vec<u8>)> {
        let mut out = Vec::new();
        for i in 0..self.stages.len() {
            for (dir, f) in self.stages[i].released() {
                if let Some(f) = self.run_from(i + 1, dir, f) {
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
        fn on_frame(&mut self, dir: Direction, _: Option<&FrameInfo>, frame: Vec<u8>) -> Verdict {
            if dir == Direction::FromGuest && !self.open {
                self.held.push((dir, frame));
                Verdict::Held
            } else {
                Verdict::Pass(frame)
            }
        }
        fn released(&mut self) -> Vec<(Direction, Vec<u8>)> {
            if self.open {
                std::mem::take(&mut self.held)
            } else {
                Vec::new()
            }
        }
    }

    struct DropShort;
    impl Stage for DropShort {
        fn on_frame(&mut self, _: Direction, info: Option<&FrameInfo>, frame: Vec<u8>) -> Verdict {
            if info.is_none() {
                Verdict::Drop("runt frame")
            } else {
                Verdict::Pass(frame)
            }
        }
    }

    #[test]
    fn pass_hold_release_drop() {
        let mut p = Pipeline::new(vec![
            Box::new(Gate {
                open: false,
                held: vec![],
            }),
            Box::new(DropShort),
        ]);
        let frame = vec![0u8; 60];
        assert!(p.process(Direction::FromGuest, frame.clone()).is_empty());
        assert_eq!(p.process(Direction::ToGuest, frame.clone()).len(), 1);
        assert!(p.process(Direction::ToGuest, vec![1, 2]).is_empty());
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
        let out = opened.poll_released();
        assert_eq!(out, vec![(Direction::FromGuest, frame)]);
        assert_eq!(opened.drops.get("runt frame"), Some(&1));
    }
}
