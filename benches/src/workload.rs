//! Seeded, reproducible request generators for the workloads of `shared/WORKLOADS.md`.
//!
//! A generator produces invocations in the plugin's own argument encoding; keys are
//! drawn uniformly (theta 0) or from a Zipfian distribution with the given theta.

use leasehold_client::{Arguments, Invocation};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// RTSFaaS banking: transfer(from, to, amount) as withdraw => deposit.
    Banking,
    /// YCSB-T: transfer(a uniform, b Zipfian).
    YcsbT,
}

impl WorkloadKind {
    pub fn plugin(self) -> &'static str {
        match self {
            WorkloadKind::Banking => "banking",
            WorkloadKind::YcsbT => "ycsb-t",
        }
    }

    /// Default key count and initial value (WORKLOADS.md).
    pub fn defaults(self) -> (u64, i64) {
        match self {
            WorkloadKind::Banking => (100_000, 1_000_000),
            WorkloadKind::YcsbT => (10_000, 1_000_000),
        }
    }
}

/// A key sampler: uniform when theta is 0, Zipfian otherwise. Hot keys are spread over
/// the key space by a fixed permutation, so they do not cluster on low numbers.
pub struct KeySampler {
    keys: u64,
    zipf: Option<Zipf<f64>>,
}

impl KeySampler {
    pub fn new(keys: u64, theta: f64) -> KeySampler {
        assert!(keys > 0, "a workload needs at least one key");
        let zipf = (theta > 0.0).then(|| Zipf::new(keys as f64, theta).expect("valid Zipf parameters"));
        KeySampler { keys, zipf }
    }

    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.keys),
            Some(zipf) => {
                let rank = (zipf.sample(rng) as u64).saturating_sub(1).min(self.keys - 1);
                // As YCSB's scrambled Zipfian: hash the rank (FNV-1a) onto the key space.
                // Rare collisions merge two ranks, which barely changes the skew.
                fnv1a(rank) % self.keys
            }
        }
    }
}

fn fnv1a(value: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Generates one client's requests.
pub struct Generator {
    kind: WorkloadKind,
    rng: SmallRng,
    first: KeySampler,
    second: KeySampler,
    keys: u64,
    client: u32,
    sequence: u64,
    run: u64,
}

impl Generator {
    /// `run` distinguishes request ids of separate runs against the same node.
    pub fn new(kind: WorkloadKind, keys: u64, theta: f64, seed: u64, client: u32, run: u64) -> Generator {
        let rng = SmallRng::seed_from_u64(seed ^ (u64::from(client) << 32) ^ 0x5EED);
        let (first, second) = match kind {
            // Banking draws both accounts from the same distribution.
            WorkloadKind::Banking => (KeySampler::new(keys, theta), KeySampler::new(keys, theta)),
            // YCSB-T: a uniform, b Zipfian.
            WorkloadKind::YcsbT => (KeySampler::new(keys, 0.0), KeySampler::new(keys, theta)),
        };
        Generator { kind, rng, first, second, keys, client, sequence: 0, run }
    }

    /// The next transfer, with a unique request id.
    pub fn next(&mut self) -> Invocation {
        let from = self.first.sample(&mut self.rng);
        let mut to = self.second.sample(&mut self.rng);
        if to == from {
            to = (to + 1) % self.keys;
        }
        let amount = self.rng.random_range(1..=10);
        let arguments = match self.kind {
            WorkloadKind::Banking => leasehold_sdk::encode(&leasehold_plugin_banking::Transfer { from, to, amount }),
            WorkloadKind::YcsbT => leasehold_sdk::encode(&leasehold_plugin_ycsb_t::Transfer { a: from, b: to, amount }),
        }
        .expect("transfer arguments encode");
        self.sequence += 1;
        let mut request_id = Vec::with_capacity(20);
        request_id.extend_from_slice(&self.run.to_be_bytes());
        request_id.extend_from_slice(&self.client.to_be_bytes());
        request_id.extend_from_slice(&self.sequence.to_be_bytes());
        Invocation {
            plugin: self.kind.plugin().to_string(),
            workflow: "transfer".to_string(),
            arguments: Arguments::Encoded(arguments),
            request_id,
        }
    }
}

/// The invocations that load `keys` keys with `value` each, in chunks.
pub fn load_invocations(kind: WorkloadKind, keys: u64, value: i64) -> Vec<Invocation> {
    const CHUNK: u64 = 10_000;
    (0..keys.div_ceil(CHUNK))
        .map(|chunk| {
            let first = chunk * CHUNK;
            let count = CHUNK.min(keys - first);
            let (workflow, arguments) = match kind {
                WorkloadKind::Banking => {
                    ("open", leasehold_sdk::encode(&leasehold_plugin_banking::Open { first, count, balance: value }))
                }
                WorkloadKind::YcsbT => {
                    ("load", leasehold_sdk::encode(&leasehold_plugin_ycsb_t::Load { first, count, value }))
                }
            };
            Invocation {
                plugin: kind.plugin().to_string(),
                workflow: workflow.to_string(),
                arguments: Arguments::Encoded(arguments.expect("load arguments encode")),
                request_id: Vec::new(),
            }
        })
        .collect()
}

/// The invocations that sum all values (for the invariant check), in chunks.
pub fn total_invocations(kind: WorkloadKind, keys: u64) -> Vec<Invocation> {
    const CHUNK: u64 = 10_000;
    (0..keys.div_ceil(CHUNK))
        .map(|chunk| {
            let first = chunk * CHUNK;
            let count = CHUNK.min(keys - first);
            let arguments = match kind {
                WorkloadKind::Banking => leasehold_sdk::encode(&leasehold_plugin_banking::Range { first, count }),
                WorkloadKind::YcsbT => leasehold_sdk::encode(&leasehold_plugin_ycsb_t::Range { first, count }),
            };
            Invocation {
                plugin: kind.plugin().to_string(),
                workflow: "total".to_string(),
                arguments: Arguments::Encoded(arguments.expect("range arguments encode")),
                request_id: Vec::new(),
            }
        })
        .collect()
}

/// Decodes the output of one `total` invocation into the sum it reports.
pub fn decode_total(kind: WorkloadKind, output: &[u8]) -> Option<i64> {
    match kind {
        WorkloadKind::Banking => leasehold_sdk::decode::<(i64, u64)>(output).ok().map(|(sum, _)| sum),
        WorkloadKind::YcsbT => leasehold_sdk::decode::<i64>(output).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_reproducible_and_ids_unique() {
        let mut a = Generator::new(WorkloadKind::Banking, 1000, 0.99, 42, 1, 7);
        let mut b = Generator::new(WorkloadKind::Banking, 1000, 0.99, 42, 1, 7);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..100 {
            let (x, y) = (a.next(), b.next());
            assert_eq!(x.arguments, y.arguments);
            assert!(ids.insert(x.request_id));
        }
    }

    #[test]
    fn zipfian_sampling_is_skewed_and_in_range() {
        let sampler = KeySampler::new(10_000, 0.99);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..20_000 {
            let key = sampler.sample(&mut rng);
            assert!(key < 10_000);
            *counts.entry(key).or_insert(0u32) += 1;
        }
        let hottest = counts.values().max().copied().unwrap_or(0);
        // Under theta 0.99 the hottest key gets roughly a tenth of all draws; uniform
        // sampling would give it a handful.
        assert!(hottest > 1000, "hottest key drew {hottest}");
    }
}
