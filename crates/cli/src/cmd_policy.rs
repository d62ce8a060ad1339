//! `duplex vm policy` / `duplex pair policy`: show or change an S3 restart
//! policy through the controller.

use crate::conn::Conn;
use crate::output::{self, Format};
use clap::Args;
use duplex_controller::restart_policy::PolicyAnswer;
use duplex_core::escalation::{Phase, PolicyChange};

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Runs of a phase within its probation window before the next phase
    /// is tried: PHASE=N (PH0.5, PH1.0, PH2.0, PH2.5, PH3.0, PH3.5); repeatable.
    #[arg(long, value_parser = parse_threshold)]
    threshold: Vec<(Phase, u32)>,
    /// How long a phase's count is remembered: PHASE=SECONDS; repeatable.
    #[arg(long, value_parser = parse_probation)]
    probation: Vec<(Phase, u64)>,
    /// The fast path for an ACT's first failure that needs a reboot.
    #[arg(long, value_parser = ["on", "off"])]
    fast_path: Option<String>,
    /// How often a LAF backup of the service data is taken, in seconds
    /// (default a day; 60 at least).
    #[arg(long, value_name = "SECONDS")]
    laf_every: Option<u64>,
}

impl PolicyArgs {
    fn change(&self) -> Option<PolicyChange> {
        let mut c = PolicyChange {
            fast_path: self.fast_path.as_deref().map(|f| f == "on"),
            laf_every_ms: self.laf_every.map(|s| s.saturating_mul(1000)),
            ..Default::default()
        };
        for &(p, t) in &self.threshold {
            c.phases.entry(p).or_default().threshold = Some(t);
        }
        for &(p, s) in &self.probation {
            c.phases.entry(p).or_default().probation_ms = Some(s.saturating_mul(1000));
        }
        (c != PolicyChange::default()).then_some(c)
    }
}

/// Shows the policy at `path` (`/v1/vms/NAME/policy`), after changing it
/// if `args` give anything.
pub async fn run(c: &Conn, path: &str, args: &PolicyArgs) -> anyhow::Result<()> {
    let client = c.client()?;
    let a: PolicyAnswer = match args.change() {
        Some(change) => client.post(path, &change).await?,
        None => client.get(path).await?,
    };
    if let Format::Json = c.output {
        return output::json(&a);
    }
    let source = serde_json::to_value(a.source)
        .map(|v| output::s(&v))
        .unwrap_or_default();
    println!(
        "restart policy of {} (from: {source}); fast path {}; LAF backup every {} s",
        a.name,
        if a.policy.fast_path { "on" } else { "off" },
        a.policy.laf_every_ms / 1000
    );
    let rows: Vec<Vec<String>> = a
        .policy
        .phases
        .iter()
        .map(|(p, pp)| {
            let threshold = match pp.threshold {
                u32::MAX => "always".to_string(),
                t => t.to_string(),
            };
            vec![
                p.label(),
                threshold,
                format!("{} s", pp.probation_ms / 1000),
            ]
        })
        .collect();
    output::table(&["PHASE", "THRESHOLD", "PROBATION"], &rows);
    Ok(())
}

fn parse_phase(text: &str) -> Result<Phase, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        format!("`{text}` is no phase (PH0.5, PH1.0, PH2.0, PH2.5, PH3.0, PH3.5, autoheal)")
    })
}

fn parse_pair<T: std::str::FromStr>(text: &str, what: &str) -> Result<(Phase, T), String> {
    let (p, v) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected PHASE={what}"))?;
    let v = v
        .parse()
        .map_err(|_| format!("`{v}` is no {what} (a whole number)"))?;
    Ok((parse_phase(p)?, v))
}

fn parse_threshold(text: &str) -> Result<(Phase, u32), String> {
    parse_pair(text, "N")
}

fn parse_probation(text: &str) -> Result<(Phase, u64), String> {
    parse_pair(text, "SECONDS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_settings_parse_or_say_what_is_wrong() {
        assert_eq!(parse_threshold("PH0.5=5"), Ok((Phase::Ph0_5, 5)));
        assert_eq!(parse_probation("autoheal=60"), Ok((Phase::Autoheal, 60)));
        assert!(parse_threshold("PH9=1").unwrap_err().contains("no phase"));
        assert!(parse_threshold("PH1.0").unwrap_err().contains("PHASE=N"));
        assert!(parse_threshold("PH1.0=x")
            .unwrap_err()
            .contains("whole number"));
    }
}
