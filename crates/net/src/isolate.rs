//! Cutting a VM off the network while its host is fenced: every frame, in
//! both directions, is dropped (counted as `host_fenced`) until lifted. The
//! agent isolates its VMs when it fences itself, so a host cut off from its
//! controller stops serving before the controller promotes anyone else.

use crate::frame::FrameInfo;
use crate::stage::{Direction, Stage, Verdict};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Drop reason of a frame of an isolated VM.
pub const FENCED: &str = "host_fenced";

/// The switch shared by the element's stage and its handle.
#[derive(Debug, Clone, Default)]
pub struct Isolation(Arc<AtomicBool>);

impl Isolation {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

pub struct IsolateStage(pub Isolation);

impl Stage for IsolateStage {
    fn on_frame(&mut self, _: Direction, _: Option<&FrameInfo>, _: &[u8], _: Instant) -> Verdict {
        if self.0.is_on() {
            Verdict::Drop(FENCED)
        } else {
            Verdict::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Pipeline;

    #[test]
    fn frames_pass_until_isolated_and_again_after() {
        let iso = Isolation::default();
        let now = Instant::now();
        let mut p = Pipeline::new(vec![Box::new(IsolateStage(iso.clone()))]);
        assert!(p.process(Direction::ToGuest, &[1], now));
        iso.set(true);
        assert!(!p.process(Direction::ToGuest, &[2], now));
        assert!(!p.process(Direction::FromGuest, &[3], now));
        assert_eq!(p.drops.get(FENCED), Some(&2));
        iso.set(false);
        assert!(p.process(Direction::FromGuest, &[4], now));
    }
}
