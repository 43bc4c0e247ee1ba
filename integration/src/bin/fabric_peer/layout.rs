//! What `fabric_peer` and the fabric conformance suite agree on: where the words of the
//! race and visibility regions are, what ring messages look like, and the reader's side
//! of the visibility check. Included by both (`#[path]`), so the two cannot drift apart.

#![allow(dead_code)]

use leasehold_fabric::{NodeId, RemoteRegion};
use std::time::{Duration, Instant};

/// Race region: a word the peers count themselves ready on, the word the test sets to
/// start them, the fetch-add counter, a lock word taken by CAS and the counter it
/// protects (incremented by READ and WRITE), then the words they race to CAS.
pub const READY_OFFSET: u64 = 0;
pub const GO_OFFSET: u64 = 8;
pub const COUNTER_OFFSET: u64 = 16;
pub const LOCK_OFFSET: u64 = 24;
pub const LOCKED_COUNTER_OFFSET: u64 = 32;
pub const RACE_WORDS_OFFSET: u64 = 64;

/// Visibility region: the flag word, the number of readers that started (the writer
/// waits for all of them, so that they watch it write), then the value the flag announces.
pub const FLAG_OFFSET: u64 = 0;
pub const READERS_OFFSET: u64 = 8;
pub const VALUE_OFFSET: u64 = 64;

/// How long a peer or the test waits for anything before it gives up.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Every ring message starts with its sender (2 bytes) and sequence number (8 bytes).
pub const RING_MESSAGE_HEADER_BYTES: usize = 10;

/// The `sequence`th message of `sender`: sender and sequence number, then filler that
/// depends on both, of a length that varies with the sequence (up to the ring's limit).
pub fn ring_message(sender: NodeId, sequence: u64, max_message_bytes: u32) -> Vec<u8> {
    let filler_limit = u64::from(max_message_bytes) - RING_MESSAGE_HEADER_BYTES as u64;
    let filler_bytes = (sequence * 7 + u64::from(sender)) % (filler_limit + 1);
    let mut message = Vec::with_capacity(RING_MESSAGE_HEADER_BYTES + filler_bytes as usize);
    message.extend_from_slice(&sender.to_le_bytes());
    message.extend_from_slice(&sequence.to_le_bytes());
    message.extend((0..filler_bytes).map(|index| (sequence as u8) ^ (index as u8) ^ (sender as u8)));
    message
}

/// Writes word indexes as ranges (`0-99,150-150`), to keep a race's report short.
pub fn format_ranges(words: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &word in words {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == word => *end = word,
            _ => ranges.push((word, word)),
        }
    }
    ranges.iter().map(|(start, end)| format!("{start}-{end}")).collect::<Vec<_>>().join(",")
}

/// Reads what [`format_ranges`] wrote.
pub fn parse_ranges(text: &str) -> Vec<u64> {
    text.split(',')
        .filter(|range| !range.is_empty())
        .flat_map(|range| {
            let (start, end) = range.split_once('-').expect("START-END");
            start.parse::<u64>().expect("a word index")..=end.parse::<u64>().expect("a word index")
        })
        .collect()
}

/// Round `round` of the visibility test: every word of the value holds `round`.
pub fn value_of_round(round: u64, value_bytes: usize) -> Vec<u8> {
    round.to_ne_bytes().iter().copied().cycle().take(value_bytes).collect()
}

/// What a reader saw during the visibility test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlagObservations {
    /// Times the reader saw a non-zero flag and then read the value.
    pub observations: u64,
    /// Distinct flag values seen: how often the reader caught the writer mid-run.
    pub distinct_flags: u64,
    /// Observations where some word of the value was older than the flag announcing it.
    pub violations: u64,
}

/// The reader's side of the visibility test: READ the flag, then READ the value, until
/// the flag announces `rounds`; every word of the value must be at least the flag.
pub fn check_flag_rule(region: &dyn RemoteRegion, value_bytes: usize, rounds: u64) -> Result<FlagObservations, String> {
    region.fetch_add(READERS_OFFSET, 1).map_err(|error| format!("count the reader: {error}"))?;
    let deadline = Instant::now() + PATIENCE;
    let mut flag = [0u8; 8];
    let mut value = vec![0u8; value_bytes];
    let mut seen = FlagObservations::default();
    let mut last_flag = 0;
    loop {
        region.read(FLAG_OFFSET, &mut flag).map_err(|error| format!("read flag: {error}"))?;
        let announced = u64::from_ne_bytes(flag);
        if announced > 0 {
            region.read(VALUE_OFFSET, &mut value).map_err(|error| format!("read value: {error}"))?;
            seen.observations += 1;
            if announced != last_flag {
                seen.distinct_flags += 1;
                last_flag = announced;
            }
            let stale =
                value.chunks_exact(8).any(|word| u64::from_ne_bytes(word.try_into().expect("a word")) < announced);
            if stale {
                seen.violations += 1;
            }
            if announced >= rounds {
                return Ok(seen);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the writer never announced round {rounds} (last seen {last_flag})"));
        }
    }
}
