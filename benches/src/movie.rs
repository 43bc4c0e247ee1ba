//! The harness's side of the movie workload (DeathStarBench compose-review): its request
//! generator, its load, and its invariant check.
//!
//! The invariant is checked against what committed: the harness journals the output and
//! the timestamp of every committed `compose_review`, then reads every movie's and user's
//! review list and every journalled review, and checks that
//!
//! * each movie's and each user's list holds exactly the committed reviews of that movie or
//!   user, newest first in commit (timestamp) order: every review is reachable from its
//!   movie and from its user, once, and nothing else is;
//! * each stored review carries the user, movie, rating and text length it was composed with;
//! * each movie's rating count and sum are those of its committed reviews.

use crate::workload::{Journal, Verdict};
use leasehold_plugin_api::movie::{self as api, ComposeReview, Composed, ListsReport, ReviewSummary};
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::HashMap;

/// The plugin's name.
pub const PLUGIN: &str = "movie";
/// WORKLOADS.md: 1,000 movies and 1,000 users.
pub const DEFAULT_KEYS: u64 = 1_000;
/// The only workflow the journal keeps.
pub const COMPOSE: &str = "compose_review";

/// Characters of DeathStarBench's random review text (its compose-review script's set).
const TEXT_ALPHABET: &[u8] = b"qwertyuiopasdfghjklzxcvbnmQWERTYUIOPASDFGHJKLZXCVBNM1234567890";

/// `length` random characters of `alphabet`.
pub(crate) fn random_text(rng: &mut SmallRng, alphabet: &[u8], length: usize) -> String {
    (0..length).map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())])).collect()
}

/// One compose: user uniform, `movie` as the caller drew it, rating 0..=10, 256 random
/// characters of text, as DeathStarBench's compose-review script sends them.
pub fn compose(rng: &mut SmallRng, keys: u64, movie: u64, review_id: u64) -> ComposeReview {
    let user = rng.random_range(0..keys);
    ComposeReview {
        review_id,
        username: api::username(user),
        password: api::password(user),
        title: api::title(movie),
        rating: rng.random_range(0..=api::RATING_MAX),
        text: random_text(rng, TEXT_ALPHABET, api::TEXT_BYTES),
    }
}

/// The `load` arguments for `keys` movies and users, in chunks the plugin accepts.
pub fn loads(keys: u64) -> Vec<api::Load> {
    (0..keys.div_ceil(api::RANGE_MAX))
        .map(|chunk| {
            let first = chunk * api::RANGE_MAX;
            api::Load { first, count: api::RANGE_MAX.min(keys - first) }
        })
        .collect()
}

/// The committed composes of a journal in commit order, or why they cannot be read.
fn composed(journal: &Journal) -> Result<Vec<Composed>, String> {
    journal
        .in_commit_order()
        .into_iter()
        .map(|entry| {
            leasehold_sdk::decode::<Composed>(&entry.output)
                .map_err(|error| format!("a committed compose_review output does not decode: {error}"))
        })
        .collect()
}

/// What the audit reads, in order: the lists of all movies and users (chunks of
/// [`api::RANGE_MAX`]), then the journalled reviews in commit order (chunks of the same size).
pub fn audits(keys: u64, journal: &Journal) -> Vec<(&'static str, Vec<u8>)> {
    let mut audits: Vec<(&'static str, Vec<u8>)> = loads(keys)
        .into_iter()
        .map(|load| {
            let lists = api::AuditLists { first: load.first, count: load.count };
            ("audit_lists", leasehold_sdk::encode(&lists).expect("audit arguments encode"))
        })
        .collect();
    // Undecodable outputs are reported by `check`; the audit reads what it can.
    let ids: Vec<u64> = composed(journal).unwrap_or_default().iter().map(|composed| composed.review_id).collect();
    for chunk in ids.chunks(api::RANGE_MAX as usize) {
        let reviews = api::AuditReviews { ids: chunk.to_vec() };
        audits.push(("audit_reviews", leasehold_sdk::encode(&reviews).expect("audit arguments encode")));
    }
    audits
}

/// Checks the audit's outputs (in the order of [`audits`]) against the journal. The
/// verdict's count is the number of reviews on movie lists, which must equal the number of
/// committed composes.
pub fn check(keys: u64, journal: &Journal, outputs: &[Vec<u8>]) -> Verdict {
    match check_or_violation(keys, journal, outputs) {
        Ok(found) => Verdict { found: Some(found), violation: None },
        Err((found, violation)) => Verdict { found, violation: Some(violation) },
    }
}

/// The reviews the journal expects of one movie or user, and the list the audit found.
struct Expected {
    reviews: Vec<u64>,
    rating_sum: u64,
}

fn check_or_violation(keys: u64, journal: &Journal, outputs: &[Vec<u8>]) -> Result<i64, (Option<i64>, String)> {
    let fail = |message: String| (None, message);
    let composed = composed(journal).map_err(fail)?;
    let list_chunks = keys.div_ceil(api::RANGE_MAX) as usize;
    if outputs.len() != list_chunks + composed.len().div_ceil(api::RANGE_MAX as usize) {
        return Err(fail(format!("the audit returned {} outputs, not the number asked for", outputs.len())));
    }
    let mut lists = ListsReport { movies: Vec::new(), movie_reviews: Vec::new(), user_reviews: Vec::new() };
    for output in &outputs[..list_chunks] {
        let chunk: ListsReport =
            leasehold_sdk::decode(output).map_err(|error| fail(format!("undecodable list audit: {error}")))?;
        lists.movies.extend(chunk.movies);
        lists.movie_reviews.extend(chunk.movie_reviews);
        lists.user_reviews.extend(chunk.user_reviews);
    }
    let mut summaries: Vec<Option<ReviewSummary>> = Vec::with_capacity(composed.len());
    for output in &outputs[list_chunks..] {
        let chunk: Vec<Option<ReviewSummary>> =
            leasehold_sdk::decode(output).map_err(|error| fail(format!("undecodable review audit: {error}")))?;
        summaries.extend(chunk);
    }
    let lengths = [lists.movies.len(), lists.movie_reviews.len(), lists.user_reviews.len(), summaries.len()];
    if lengths[..3].iter().any(|&length| length as u64 != keys) || summaries.len() != composed.len() {
        return Err(fail(format!("the audit returned {lengths:?} entries for {keys} movies and users")));
    }
    let found: i64 = lists.movie_reviews.iter().flatten().map(|list| list.count as i64).sum();
    let fail = |message: String| (Some(found), message);

    // Every committed review is stored as composed; ids are unique.
    let mut stored: HashMap<u64, ReviewSummary> = HashMap::with_capacity(composed.len());
    let mut by_movie: Vec<Expected> = (0..keys).map(|_| Expected { reviews: Vec::new(), rating_sum: 0 }).collect();
    let mut by_user: Vec<Expected> = (0..keys).map(|_| Expected { reviews: Vec::new(), rating_sum: 0 }).collect();
    for (compose, summary) in composed.iter().zip(summaries) {
        let id = compose.review_id;
        let summary = summary.ok_or_else(|| fail(format!("committed review {id} is not stored")))?;
        let as_composed = (summary.review_id, summary.user_id, summary.movie_id, summary.rating);
        if as_composed != (id, compose.user_id, compose.movie_id, compose.rating)
            || summary.text_bytes as usize != api::TEXT_BYTES
        {
            return Err(fail(format!("review {id} is stored as {summary:?}, but was composed as {compose:?}")));
        }
        if stored.insert(id, summary).is_some() {
            return Err(fail(format!("review id {id} committed twice")));
        }
        let (Some(movie), Some(user)) =
            (by_movie.get_mut(compose.movie_id as usize), by_user.get_mut(compose.user_id as usize))
        else {
            return Err(fail(format!("review {id} names a movie or user outside the {keys} loaded")));
        };
        for expected in [movie, user] {
            expected.reviews.push(id);
            expected.rating_sum += u64::from(compose.rating);
        }
    }

    for (index, expected) in by_movie.iter().enumerate() {
        let movie = lists.movies[index].as_ref().ok_or_else(|| fail(format!("movie {index} is missing")))?;
        if (movie.rating_count, movie.rating_sum) != (expected.reviews.len() as u64, expected.rating_sum) {
            return Err(fail(format!(
                "movie {index} counts {} ratings summing to {}, but {} committed reviews rated it {}",
                movie.rating_count,
                movie.rating_sum,
                expected.reviews.len(),
                expected.rating_sum
            )));
        }
        let list = lists.movie_reviews[index].ok_or_else(|| fail(format!("movie {index} has no review list")))?;
        walk(list, &expected.reviews, &stored, |summary| summary.older_by_movie)
            .map_err(|problem| fail(format!("the review list of movie {index} {problem}")))?;
    }
    for (index, expected) in by_user.iter().enumerate() {
        let list = lists.user_reviews[index].ok_or_else(|| fail(format!("user {index} has no review list")))?;
        walk(list, &expected.reviews, &stored, |summary| summary.older_by_user)
            .map_err(|problem| fail(format!("the review list of user {index} {problem}")))?;
    }
    Ok(found)
}

/// Walks a review list from its newest review through `older` and checks that it is
/// exactly `expected` (oldest first) reversed, and that its count agrees.
fn walk(
    list: api::ReviewList,
    expected: &[u64],
    stored: &HashMap<u64, ReviewSummary>,
    older: impl Fn(&ReviewSummary) -> Option<u64>,
) -> Result<(), String> {
    if list.count != expected.len() as u64 {
        return Err(format!("counts {} reviews, but {} committed", list.count, expected.len()));
    }
    let mut next = list.newest;
    for (position, &want) in expected.iter().rev().enumerate() {
        match next {
            Some(id) if id == want => {}
            Some(id) => {
                return Err(format!("has review {id} at position {position} from the newest, where {want} committed"))
            }
            None => return Err(format!("ends after {position} reviews; committed review {want} is unreachable")),
        }
        next = stored.get(&want).and_then(&older);
    }
    match next {
        None => Ok(()),
        Some(id) => Err(format!("goes on past its {} committed reviews to review {id}", expected.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::JournalEntry;
    use leasehold_client::Timestamp;
    use leasehold_plugin_api::movie::{Movie, ReviewList};

    /// A small store kept the way the plugin keeps it, to build audits from.
    struct Model {
        keys: u64,
        journal: Journal,
        movies: Vec<Movie>,
        movie_lists: Vec<ReviewList>,
        user_lists: Vec<ReviewList>,
        reviews: Vec<ReviewSummary>,
    }

    impl Model {
        fn new(keys: u64) -> Model {
            Model {
                keys,
                journal: Journal::default(),
                movies: (0..keys)
                    .map(|id| Movie { movie_id: id, title: api::title(id), rating_count: 0, rating_sum: 0 })
                    .collect(),
                movie_lists: vec![ReviewList::default(); keys as usize],
                user_lists: vec![ReviewList::default(); keys as usize],
                reviews: Vec::new(),
            }
        }

        fn compose(&mut self, review_id: u64, user: u64, movie: u64, rating: u8) {
            let (movie_index, user_index) = (movie as usize, user as usize);
            self.movies[movie_index].rating_count += 1;
            self.movies[movie_index].rating_sum += u64::from(rating);
            self.reviews.push(ReviewSummary {
                review_id,
                user_id: user,
                movie_id: movie,
                rating,
                text_bytes: api::TEXT_BYTES as u32,
                older_by_movie: self.movie_lists[movie_index].newest,
                older_by_user: self.user_lists[user_index].newest,
            });
            for list in [&mut self.movie_lists[movie_index], &mut self.user_lists[user_index]] {
                list.count += 1;
                list.newest = Some(review_id);
            }
            let composed =
                Composed { review_id, user_id: user, movie_id: movie, rating, movie_reviews: 0, user_reviews: 0 };
            // Journal entries arrive in any order; the sequence number carries the serial order.
            let timestamp = Timestamp { epoch: 1, node: 0, sequence: review_id as u32 };
            let output = leasehold_sdk::encode(&composed).expect("encode");
            self.journal.entries.insert(0, JournalEntry { timestamp, output });
        }

        fn outputs(&self) -> Vec<Vec<u8>> {
            let lists = ListsReport {
                movies: self.movies.iter().cloned().map(Some).collect(),
                movie_reviews: self.movie_lists.iter().copied().map(Some).collect(),
                user_reviews: self.user_lists.iter().copied().map(Some).collect(),
            };
            let by_id: HashMap<u64, ReviewSummary> = self.reviews.iter().map(|r| (r.review_id, *r)).collect();
            let ids = composed(&self.journal).expect("journal decodes");
            let summaries: Vec<Option<ReviewSummary>> = ids.iter().map(|c| by_id.get(&c.review_id).copied()).collect();
            vec![leasehold_sdk::encode(&lists).expect("encode"), leasehold_sdk::encode(&summaries).expect("encode")]
        }

        fn verdict(&self) -> Verdict {
            check(self.keys, &self.journal, &self.outputs())
        }
    }

    fn model() -> Model {
        let mut model = Model::new(3);
        for (id, user, movie, rating) in [(1, 0, 1, 7), (2, 1, 1, 3), (3, 0, 2, 10), (4, 0, 1, 0)] {
            model.compose(id, user, movie, rating);
        }
        model
    }

    #[test]
    fn consistent_lists_pass_and_count_reviews() {
        let model = model();
        assert_eq!(model.verdict(), Verdict { found: Some(4), violation: None });
        assert_eq!(audits(3, &model.journal).len(), 2);
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let violation = |damage: fn(&mut Model)| {
            let mut model = model();
            damage(&mut model);
            model.verdict().violation.expect("the damage is detected")
        };
        // A review left off its user's list (user 0's newest still points at review 1).
        let skipped = violation(|m| {
            m.user_lists[0].newest = Some(1);
            m.user_lists[0].count = 3;
        });
        assert!(skipped.contains("user 0"), "{skipped}");
        // A list that lost its link to older reviews.
        let cut = violation(|m| m.reviews[3].older_by_movie = None);
        assert!(cut.contains("movie 1") && cut.contains("unreachable"), "{cut}");
        // A rating not added to its movie.
        let unrated = violation(|m| m.movies[2].rating_sum = 0);
        assert!(unrated.contains("movie 2 counts 1 ratings summing to 0"), "{unrated}");
        // A review stored with another rating than composed.
        let altered = violation(|m| m.reviews[0].rating = 9);
        assert!(altered.contains("review 1 is stored"), "{altered}");
        // A review the journal does not know at the head of a list.
        let foreign = violation(|m| {
            m.movie_lists[2].newest = Some(99);
        });
        assert!(foreign.contains("has review 99"), "{foreign}");
        // A committed review that is not stored.
        let lost = violation(|m| m.reviews.retain(|r| r.review_id != 2));
        assert!(lost.contains("review 2 is not stored"), "{lost}");
        // A list that goes on past its committed reviews (a cycle, or an aborted review).
        let longer = violation(|m| m.reviews[0].older_by_user = Some(3));
        assert!(longer.contains("goes on past"), "{longer}");
    }

    #[test]
    fn undecodable_outputs_are_violations() {
        let model = model();
        let verdict = check(3, &model.journal, &[vec![1, 2, 3], vec![]]);
        assert!(verdict.violation.expect("garbage").contains("undecodable"));
        let verdict = check(3, &model.journal, &[]);
        assert!(verdict.violation.expect("missing").contains("outputs"));
    }

    #[test]
    fn loads_and_audits_cover_every_key_in_chunks() {
        let loads = loads(25_001);
        assert_eq!(loads.len(), 3);
        assert_eq!(loads.iter().map(|load| load.count).sum::<u64>(), 25_001);
        assert_eq!(loads[2], api::Load { first: 20_000, count: 5_001 });
    }
}
