//! The deterministic simulation of the cluster protocol (`integration/src/simulation.rs`):
//! a CI-sized run of seeds with crashes, partitions, lost, duplicated and reordered frames, a self-test that each
//! planted protocol bug is caught, and a check that a seed replays exactly.
//!
//! `LEASEHOLD_SIM_SEEDS=N` runs N seeds instead of the CI-sized default;
//! `LEASEHOLD_SIM_SEED=S` runs seed S alone (to replay a failure).

use leasehold_integration::simulation::{simulate, PlantedBug, SimulationConfig, SimulationReport};

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("LEASEHOLD_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("LEASEHOLD_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000u64);
    (1..=count).collect()
}

fn totals(reports: &[SimulationReport]) -> String {
    let sum = |f: fn(&SimulationReport) -> u64| reports.iter().map(f).sum::<u64>();
    format!(
        "{} seeds: {} messages ({} frames lost and pushed again, {} duplicated, {} overtaking), {} crashes, {} partitions, {} agreements, {} lease moves, {} acknowledged, {} epochs committed",
        reports.len(),
        sum(|r| r.messages),
        sum(|r| r.frames_lost),
        sum(|r| r.frames_duplicated),
        sum(|r| r.frames_overtaking),
        sum(|r| r.crashes),
        sum(|r| r.partitions),
        sum(|r| r.agreements),
        sum(|r| r.lease_moves),
        sum(|r| r.acknowledged),
        sum(|r| r.committed_epochs),
    )
}

#[test]
fn the_protocol_keeps_its_promises_under_crashes_partitions_loss_and_reordering() {
    let reports: Vec<SimulationReport> =
        seeds().into_iter().map(|seed| simulate(seed, SimulationConfig::default())).collect();
    println!("{}", totals(&reports));
    let failed: Vec<&SimulationReport> = reports.iter().filter(|r| !r.violations.is_empty()).collect();
    for report in failed.iter().take(5) {
        eprintln!("seed {} (replay: LEASEHOLD_SIM_SEED={}): {:?}", report.seed, report.seed, report.violations);
    }
    assert!(failed.is_empty(), "{} of {} seeds broke an invariant", failed.len(), reports.len());
    // The faults really happened: a run without them would prove little.
    assert!(reports.iter().map(|r| r.crashes).sum::<u64>() > 0 || reports.len() < 20);
    assert!(reports.iter().map(|r| r.lease_moves).sum::<u64>() > 0 || reports.len() < 20);
    assert!(reports.iter().map(|r| r.frames_lost).sum::<u64>() > 0 || reports.len() < 20);
    assert!(reports.iter().map(|r| r.frames_overtaking).sum::<u64>() > 0 || reports.len() < 20);
    assert!(reports.iter().map(|r| r.acknowledged).sum::<u64>() > 0);
}

#[test]
fn every_planted_bug_is_caught() {
    for bug in
        [PlantedBug::ReplyOnLocalDurability, PlantedBug::AgreeOnOwnDurableEpoch, PlantedBug::MoveTakesEffectEarly]
    {
        let config = SimulationConfig { planted: Some(bug), ..SimulationConfig::default() };
        let caught = (1..=300u64).find_map(|seed| {
            let report = simulate(seed, config);
            (!report.violations.is_empty()).then_some(report)
        });
        let report = caught.unwrap_or_else(|| panic!("planted bug {bug:?} was not caught in 300 seeds"));
        println!("{bug:?}: caught by seed {}: {}", report.seed, report.violations[0]);
    }
}

#[test]
fn a_seed_replays_exactly() {
    let first = simulate(42, SimulationConfig::default());
    let second = simulate(42, SimulationConfig::default());
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    assert_ne!(format!("{first:?}"), format!("{:?}", simulate(43, SimulationConfig::default())));
}
