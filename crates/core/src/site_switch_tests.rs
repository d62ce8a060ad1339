use super::*;

/// Runs a switch with the given outcomes (true: ok) until it is over;
/// returns the orders given and the end.
fn run(outcomes: &[bool]) -> (Vec<Order>, Switch) {
    let mut s = Switch::start();
    let mut orders = Vec::new();
    let mut it = outcomes.iter();
    while let Some(o) = s.order() {
        orders.push(o);
        let Some(ok) = it.next() else { break };
        s = s.next(*ok);
    }
    (orders, s)
}

#[test]
fn all_ok_moves_the_vm_and_protects_it_from_the_old_side() {
    let (orders, s) = run(&[true; 5]);
    use Order::*;
    assert_eq!(orders, vec![Handoff, Activate, Record, Standby, Protect]);
    assert_eq!(s.state, State::Done);
    assert_eq!(s.afterwards, Afterwards::default());
    assert!(s.moved());
}

#[test]
fn a_failed_handoff_or_activation_leaves_the_vm_where_it_was() {
    let (orders, s) = run(&[false]);
    assert_eq!(orders, vec![Order::Handoff]);
    assert_eq!(s.state, State::Aborted);
    let (orders, s) = run(&[true, false, true]);
    assert_eq!(orders, vec![Order::Handoff, Order::Activate, Order::Resume]);
    assert_eq!(s.state, State::Aborted);
    assert!(!s.moved());
    let (_, s) = run(&[true, false, false]);
    assert_eq!(s.state, State::Failed);
}

/// Every sequence of outcomes: never two sides running (activation and
/// resume never both succeed), every switch ends within six orders,
/// and after a successful activation the old side is never resumed.
#[test]
fn every_sequence_of_outcomes_ends_safely() {
    for bits in 0u32..64 {
        let outcomes: Vec<bool> = (0..6).map(|i| bits & (1 << i) != 0).collect();
        let mut s = Switch::start();
        let mut activated = false;
        let mut given = 0;
        for ok in outcomes {
            let Some(order) = s.order() else { break };
            given += 1;
            if order == Order::Resume {
                assert!(!activated, "{bits:06b}: resumed after activation");
            }
            if order == Order::Activate && ok {
                activated = true;
            }
            s = s.next(ok);
        }
        assert!(s.is_over(), "{bits:06b}: not over after {given} orders");
        assert_eq!(s.moved(), activated, "{bits:06b}");
        assert_eq!(s.state == State::Done, activated, "{bits:06b}");
        assert_eq!(s.next(true), s, "over stays over");
    }
}

#[test]
fn failures_after_activation_are_noted_not_undone() {
    let (_, s) = run(&[true, true, false, false]);
    assert_eq!(s.state, State::Done);
    assert_eq!(
        s.afterwards,
        Afterwards {
            record_failed: true,
            standby_failed: true,
            protect_failed: false,
        }
    );
    let (_, s) = run(&[true, true, true, true, false]);
    assert!(s.afterwards.protect_failed);
}

#[test]
fn a_switch_taken_over_mid_way_finishes_or_is_called_off() {
    let s = Switch::at(Step::Recording);
    assert!(s.moved());
    assert_eq!(s.next(true).next(true).next(true).state, State::Done);
    let s = Switch::at(Step::Resuming);
    assert!(!s.moved());
    assert_eq!(s.order(), Some(Order::Resume));
    assert_eq!(s.next(true).state, State::Aborted);
}

fn side(active: bool, handed_off: Option<u64>) -> crate::site::SiteSide {
    crate::site::SiteSide {
        vm: "web".into(),
        active,
        buffer: None,
        lag_ms: None,
        applied: (!active).then_some(7),
        handed_off,
    }
}

#[test]
fn a_switch_left_half_done_is_taken_over_from_what_both_sides_show() {
    let (running, paused_here, replica) =
        (side(true, None), side(true, Some(7)), side(false, None));
    // Handed off, the other side never ran it: called off.
    let t = Switch::left_half_done(&paused_here, &replica).unwrap();
    assert_eq!(
        (t.switch.order(), t.epoch, t.recorded),
        (Some(Order::Resume), 7, false)
    );
    // Handed off and activated, not recorded: recorded, then on.
    let t = Switch::left_half_done(&paused_here, &running).unwrap();
    assert_eq!((t.switch.order(), t.recorded), (Some(Order::Record), false));
    // Recorded, the old side (now the record's backup) still handed off.
    let t = Switch::left_half_done(&running, &paused_here).unwrap();
    assert_eq!(
        (t.switch.order(), t.epoch, t.recorded),
        (Some(Order::Standby), 7, true)
    );
    assert_eq!(t.switch.next(true).order(), Some(Order::Protect));
    // Nothing half-done: running with a replica; or its home lost the VM
    // (not a switch's doing: the failover paths handle it).
    assert_eq!(Switch::left_half_done(&running, &replica), None);
    assert_eq!(Switch::left_half_done(&replica, &paused_here), None);
    assert_eq!(Switch::left_half_done(&replica, &replica), None);
}
