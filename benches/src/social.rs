//! The harness's side of the social workload (Retwis as Boki ran it): the follow graph,
//! the request generator, the load, and the invariant check.
//!
//! The follow graph is a pure function of the number of users (seeded with Boki's
//! `rand_seed`), so the load, every client's generator and the check agree on it without
//! sharing state: each user has [`FOLLOWERS_PER_USER`] distinct followers.
//!
//! The invariant is checked against what committed: the harness journals the output and
//! timestamp of every committed `post`, then reads every timeline and every journalled post,
//! and checks that
//!
//! * every committed post is stored as posted, and notified only followers of its author,
//!   as many as it could (at most four);
//! * every user's timeline holds exactly the newest (at most 24) committed posts that
//!   notified that user, in commit (timestamp) order, with the stored content: no
//!   notification is lost, duplicated or reordered, and no aborted post reached anyone;
//! * the global timeline holds exactly the newest 96 committed posts in commit order.

use crate::workload::{Journal, Verdict};
use leasehold_plugin_api::social::{self as api, NewPost, Post, Posted, PostsReport, TimelinesReport};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// The plugin's name.
pub const PLUGIN: &str = "social";
/// WORKLOADS.md: 10,000 users.
pub const DEFAULT_KEYS: u64 = 10_000;
/// WORKLOADS.md: 8 followers each (Boki's `followers_per_user`).
pub const FOLLOWERS_PER_USER: usize = 8;
/// Boki's `rand_seed`, which seeds its follow graph.
pub const GRAPH_SEED: u64 = 23_333;
/// The only workflow the journal keeps.
pub const POST: &str = "post";
/// Users per `load` transaction (each carries its follow lists).
const LOAD_CHUNK: u64 = 1_000;
/// The workflows of the mix, in the order of [`MIX`].
pub const WORKFLOWS: [&str; 4] = ["login", "profile", "post_list", "post"];
/// WORKLOADS.md's mix in percent: login 15, profile 30, post-list 50, post 5.
pub const MIX: [u32; 4] = [15, 30, 50, 5];

/// Characters of Boki's random post bodies (`utils.RandomString`: letters).
const BODY_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// The followers of every user `0..users`: [`FOLLOWERS_PER_USER`] distinct other users
/// each (fewer when there are not that many others), drawn uniformly.
pub fn followers(users: u64) -> Vec<Vec<u64>> {
    let mut rng = SmallRng::seed_from_u64(GRAPH_SEED ^ users);
    let per_user = FOLLOWERS_PER_USER.min(users.saturating_sub(1) as usize);
    (0..users)
        .map(|user| {
            let mut chosen = Vec::with_capacity(per_user);
            while chosen.len() < per_user {
                let follower = rng.random_range(0..users);
                if follower != user && !chosen.contains(&follower) {
                    chosen.push(follower);
                }
            }
            chosen
        })
        .collect()
}

/// The `load` arguments for `users` users with the graph of [`followers`].
pub fn loads(users: u64) -> Vec<api::Load> {
    let followers = followers(users);
    let mut followees = vec![Vec::new(); users as usize];
    for (user, user_followers) in followers.iter().enumerate() {
        for &follower in user_followers {
            followees[follower as usize].push(user as u64);
        }
    }
    (0..users.div_ceil(LOAD_CHUNK))
        .map(|chunk| {
            let range = chunk * LOAD_CHUNK..users.min((chunk + 1) * LOAD_CHUNK);
            let users = range
                .map(|user| api::NewUser {
                    user_id: user,
                    followers: followers[user as usize].clone(),
                    followees: followees[user as usize].clone(),
                })
                .collect();
            api::Load { users }
        })
        .collect()
}

/// Draws the next request by [`MIX`] for a user drawn by `user` (Boki's client: uniform).
/// `post_id` names the post should the draw be one.
pub fn next(
    rng: &mut SmallRng,
    followers: &[Vec<u64>],
    mut user: impl FnMut(&mut SmallRng) -> u64,
    post_id: u64,
) -> (&'static str, Vec<u8>) {
    let mut ticket = rng.random_range(0..MIX.iter().sum::<u32>());
    let mut workflow = WORKFLOWS[WORKFLOWS.len() - 1];
    for (name, share) in WORKFLOWS.into_iter().zip(MIX) {
        if ticket < share {
            workflow = name;
            break;
        }
        ticket -= share;
    }
    let user = user(rng);
    let arguments = match workflow {
        "login" => leasehold_sdk::encode(&api::Login { username: api::user_name(user), password: api::password(user) }),
        "profile" => leasehold_sdk::encode(&api::Profile { user_id: user }),
        // Boki's client reads the global timeline in a quarter of its post lists.
        "post_list" => leasehold_sdk::encode(&api::PostList { user_id: (rng.random_range(0..4) != 0).then_some(user) }),
        _ => {
            let mut notify = followers.get(user as usize).cloned().unwrap_or_default();
            notify.shuffle(rng);
            notify.truncate(api::NOTIFY_MAX);
            let body = crate::movie::random_text(rng, BODY_ALPHABET, api::BODY_BYTES);
            leasehold_sdk::encode(&NewPost { post_id, author: user, body, notify })
        }
    };
    (workflow, arguments.expect("social arguments encode"))
}

fn posted(journal: &Journal) -> Result<Vec<Posted>, String> {
    journal
        .in_commit_order()
        .into_iter()
        .map(|entry| {
            leasehold_sdk::decode::<Posted>(&entry.output)
                .map_err(|error| format!("a committed post output does not decode: {error}"))
        })
        .collect()
}

/// What the audit reads, in order: the timelines of all users in chunks (the first with the
/// global timeline), then the journalled posts in commit order, in chunks.
pub fn audits(users: u64, journal: &Journal) -> Vec<(&'static str, Vec<u8>)> {
    let mut audits: Vec<(&'static str, Vec<u8>)> = (0..users.div_ceil(api::RANGE_MAX))
        .map(|chunk| {
            let first = chunk * api::RANGE_MAX;
            let timelines = api::AuditTimelines { first, count: api::RANGE_MAX.min(users - first), global: chunk == 0 };
            ("audit_timelines", leasehold_sdk::encode(&timelines).expect("audit arguments encode"))
        })
        .collect();
    // Undecodable outputs are reported by `check`; the audit reads what it can.
    let ids: Vec<u64> = posted(journal).unwrap_or_default().iter().map(|post| post.post_id).collect();
    for chunk in ids.chunks(api::RANGE_MAX as usize) {
        let posts = api::AuditPosts { ids: chunk.to_vec() };
        audits.push(("audit_posts", leasehold_sdk::encode(&posts).expect("audit arguments encode")));
    }
    audits
}

/// Checks the audit's outputs (in the order of [`audits`]) against the journal. The
/// verdict's count is the number of committed posts found stored.
pub fn check(users: u64, journal: &Journal, outputs: &[Vec<u8>]) -> Verdict {
    match check_or_violation(users, journal, outputs) {
        Ok(found) => Verdict { found: Some(found), violation: None },
        Err((found, violation)) => Verdict { found, violation: Some(violation) },
    }
}

/// The post ids of a timeline, oldest first.
fn ids(posts: &[Post]) -> Vec<u64> {
    posts.iter().map(|post| post.post_id).collect()
}

/// Where a timeline's ids first differ from the expected ones, said briefly (timelines
/// are long; a violation names the first place they part).
fn difference(found: &[u64], want: &[u64]) -> String {
    match found.iter().zip(want).position(|(found, want)| found != want) {
        Some(position) => format!(
            "at position {position} (oldest first) it holds post {} where post {} committed",
            found[position], want[position]
        ),
        None => format!("it holds {} posts where {} committed", found.len(), want.len()),
    }
}

/// The last `limit` entries of `ids`.
fn newest(ids: &[u64], limit: usize) -> &[u64] {
    &ids[ids.len().saturating_sub(limit)..]
}

fn check_or_violation(users: u64, journal: &Journal, outputs: &[Vec<u8>]) -> Result<i64, (Option<i64>, String)> {
    let fail = |message: String| (None, message);
    let posted = posted(journal).map_err(fail)?;
    let timeline_chunks = users.div_ceil(api::RANGE_MAX) as usize;
    if outputs.len() != timeline_chunks + posted.len().div_ceil(api::RANGE_MAX as usize) {
        return Err(fail(format!("the audit returned {} outputs, not the number asked for", outputs.len())));
    }
    let mut timelines = Vec::with_capacity(users as usize);
    let mut global = None;
    for output in &outputs[..timeline_chunks] {
        let chunk: TimelinesReport =
            leasehold_sdk::decode(output).map_err(|error| fail(format!("undecodable timeline audit: {error}")))?;
        timelines.extend(chunk.users);
        global = global.or(chunk.global);
    }
    let mut stored: Vec<Option<Post>> = Vec::with_capacity(posted.len());
    for output in &outputs[timeline_chunks..] {
        let chunk: PostsReport =
            leasehold_sdk::decode(output).map_err(|error| fail(format!("undecodable post audit: {error}")))?;
        stored.extend(chunk.posts);
    }
    if timelines.len() as u64 != users || stored.len() != posted.len() {
        return Err(fail(format!("the audit returned {} timelines and {} posts", timelines.len(), stored.len())));
    }
    let found = stored.iter().flatten().count() as i64;
    let fail = |message: String| (Some(found), message);

    // Each committed post: stored as posted, notifying only followers, as many as it could.
    let followers = followers(users);
    let mut expected: Vec<Vec<u64>> = vec![Vec::new(); users as usize];
    let mut seen = HashSet::with_capacity(posted.len());
    for (post, stored) in posted.iter().zip(&stored) {
        let id = post.post_id;
        let stored = stored.as_ref().ok_or_else(|| fail(format!("committed post {id} is not stored")))?;
        if (stored.post_id, stored.author) != (id, post.author)
            || stored.author_name != api::user_name(post.author)
            || stored.body.len() != api::BODY_BYTES
        {
            return Err(fail(format!("post {id} by user {} is stored as {stored:?}", post.author)));
        }
        if !seen.insert(id) {
            return Err(fail(format!("post id {id} committed twice")));
        }
        let author_followers = followers
            .get(post.author as usize)
            .ok_or_else(|| fail(format!("post {id} names author {} outside the {users} loaded", post.author)))?;
        if post.notified.len() != author_followers.len().min(api::NOTIFY_MAX) {
            return Err(fail(format!("post {id} notified {} of its author's followers", post.notified.len())));
        }
        for &follower in &post.notified {
            if !author_followers.contains(&follower) {
                return Err(fail(format!(
                    "post {id} notified user {follower}, who does not follow user {}",
                    post.author
                )));
            }
            expected[follower as usize].push(id);
        }
    }

    // Each timeline: exactly the newest posts that notified its user, with their content.
    let by_id: std::collections::HashMap<u64, &Post> =
        stored.iter().flatten().map(|post| (post.post_id, post)).collect();
    let same_content = |timeline: &[Post]| {
        timeline.iter().find(|entry| by_id.get(&entry.post_id).is_some_and(|post| *post != *entry)).map(|e| e.post_id)
    };
    for (user, (timeline, notified)) in timelines.iter().zip(&expected).enumerate() {
        let timeline = timeline.as_ref().ok_or_else(|| fail(format!("user {user} has no timeline")))?;
        let want = newest(notified, api::USER_TIMELINE_MAX);
        let found_ids = ids(&timeline.posts);
        if found_ids != want {
            return Err(fail(format!(
                "the timeline of user {user} is not the newest committed posts that notified it: {}",
                difference(&found_ids, want)
            )));
        }
        if let Some(id) = same_content(&timeline.posts) {
            return Err(fail(format!("the timeline of user {user} carries post {id} with other content than stored")));
        }
    }
    let global = global.unwrap_or_default();
    let all: Vec<u64> = posted.iter().map(|post| post.post_id).collect();
    let want = newest(&all, api::GLOBAL_TIMELINE_MAX);
    let found_ids = ids(&global.posts);
    if found_ids != want {
        return Err(fail(format!(
            "the global timeline is not the newest committed posts: {}",
            difference(&found_ids, want)
        )));
    }
    if let Some(id) = same_content(&global.posts) {
        return Err(fail(format!("the global timeline carries post {id} with other content than stored")));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::JournalEntry;
    use api::Timeline;
    use leasehold_client::Timestamp;

    #[test]
    fn the_graph_gives_everyone_distinct_followers_and_is_fixed() {
        let graph = followers(1_000);
        assert_eq!(graph, followers(1_000));
        for (user, user_followers) in graph.iter().enumerate() {
            assert_eq!(user_followers.len(), FOLLOWERS_PER_USER);
            assert!(!user_followers.contains(&(user as u64)));
            assert_eq!(user_followers.iter().collect::<HashSet<_>>().len(), FOLLOWERS_PER_USER);
        }
        // Followees are the inverse: every follow edge shows on both sides.
        let loads = loads(1_000);
        let edges = |pick: fn(&api::NewUser) -> &Vec<u64>| {
            loads.iter().flat_map(|l| &l.users).map(|u| pick(u).len()).sum::<usize>()
        };
        assert_eq!(edges(|u| &u.followers), 8_000);
        assert_eq!(edges(|u| &u.followees), 8_000);
        assert_eq!(followers(3).iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    /// A small store kept the way the plugin keeps it, to build audits from.
    struct Model {
        users: u64,
        journal: Journal,
        timelines: Vec<Vec<Post>>,
        global: Vec<Post>,
        posts: Vec<Post>,
    }

    impl Model {
        fn new(users: u64) -> Model {
            Model {
                users,
                journal: Journal::default(),
                timelines: vec![Vec::new(); users as usize],
                global: Vec::new(),
                posts: Vec::new(),
            }
        }

        fn post(&mut self, post_id: u64, author: u64) {
            let post = Post { post_id, author, author_name: api::user_name(author), body: "b".repeat(api::BODY_BYTES) };
            let notified: Vec<u64> = followers(self.users)[author as usize].iter().copied().take(4).collect();
            for &follower in &notified {
                let timeline = &mut self.timelines[follower as usize];
                timeline.push(post.clone());
                let excess = timeline.len().saturating_sub(api::USER_TIMELINE_MAX);
                timeline.drain(..excess);
            }
            self.global.push(post.clone());
            let excess = self.global.len().saturating_sub(api::GLOBAL_TIMELINE_MAX);
            self.global.drain(..excess);
            self.posts.push(post);
            let output = leasehold_sdk::encode(&Posted { post_id, author, notified }).expect("encode");
            let timestamp = Timestamp { epoch: post_id / 7, node: 0, sequence: (post_id % 7) as u32 };
            // Journal entries arrive in any order; the timestamps carry the serial order.
            self.journal.entries.insert(0, JournalEntry { timestamp, output });
        }

        fn outputs(&self) -> Vec<Vec<u8>> {
            let report = TimelinesReport {
                users: self.timelines.iter().map(|posts| Some(Timeline { posts: posts.clone() })).collect(),
                global: Some(Timeline { posts: self.global.clone() }),
            };
            let ordered = posted(&self.journal).expect("decodes");
            let posts = ordered.iter().map(|p| self.posts.iter().find(|s| s.post_id == p.post_id).cloned()).collect();
            vec![
                leasehold_sdk::encode(&report).expect("encode"),
                leasehold_sdk::encode(&PostsReport { posts }).expect("encode"),
            ]
        }
    }

    /// 300 posts from 10 users: every timeline and the global one overflow their limits.
    fn model() -> Model {
        let mut model = Model::new(10);
        for post_id in 1..=300 {
            model.post(post_id, post_id * 7 % 10);
        }
        model
    }

    #[test]
    fn consistent_timelines_pass_and_count_posts() {
        let model = model();
        assert!(model.timelines.iter().all(|t| t.len() == api::USER_TIMELINE_MAX));
        assert_eq!(check(10, &model.journal, &model.outputs()), Verdict { found: Some(300), violation: None });
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let violation = |damage: fn(&mut Model)| {
            let mut model = model();
            damage(&mut model);
            check(10, &model.journal, &model.outputs()).violation.expect("the damage is detected")
        };
        let lost = violation(|m| {
            m.timelines[3].pop();
        });
        assert!(lost.contains("timeline of user 3") && lost.contains("holds 23 posts where 24 committed"), "{lost}");
        let reordered = violation(|m| m.timelines[5].swap(0, 1));
        assert!(reordered.contains("timeline of user 5") && reordered.contains("at position 0"), "{reordered}");
        let altered = violation(|m| m.timelines[2][4].body = "x".repeat(api::BODY_BYTES));
        assert!(altered.contains("other content"), "{altered}");
        let global = violation(|m| {
            m.global.remove(0);
        });
        assert!(global.contains("global timeline"), "{global}");
        let unstored = violation(|m| m.posts.retain(|p| p.post_id != 17));
        assert!(unstored.contains("post 17 is not stored"), "{unstored}");
        // A post from an aborted request that still reached a timeline.
        let leaked = violation(|m| {
            let mut stray = m.timelines[1][0].clone();
            stray.post_id = 9_999;
            m.timelines[1].push(stray);
        });
        assert!(leaked.contains("timeline of user 1"), "{leaked}");
        // A post that claims to have notified someone who does not follow its author.
        let mut model = model();
        let stranger = (0..10).find(|u| *u != 3 && !followers(10)[3].contains(u)).expect("a non-follower");
        let notified = vec![stranger, followers(10)[3][0], followers(10)[3][1], followers(10)[3][2]];
        let output = leasehold_sdk::encode(&Posted { post_id: 1_000, author: 3, notified }).expect("encode");
        let timestamp = Timestamp { epoch: 999, node: 0, sequence: 0 };
        model.journal.entries.push(JournalEntry { timestamp, output });
        let body = "b".repeat(api::BODY_BYTES);
        model.posts.push(Post { post_id: 1_000, author: 3, author_name: api::user_name(3), body });
        let stray = check(10, &model.journal, &model.outputs()).violation.expect("a stranger was notified");
        assert!(stray.contains("does not follow user 3"), "{stray}");
    }

    #[test]
    fn the_generator_follows_the_mix_and_notifies_followers() {
        let graph = followers(100);
        let mut rng = SmallRng::seed_from_u64(5);
        let mut counts = [0usize; 4];
        for draw in 0..40_000u64 {
            let (workflow, arguments) = next(&mut rng, &graph, |rng| rng.random_range(0..100), draw);
            let index = WORKFLOWS.iter().position(|w| *w == workflow).expect("a mix workflow");
            counts[index] += 1;
            if workflow == "post" {
                let post: NewPost = leasehold_sdk::decode(&arguments).expect("post arguments");
                assert_eq!(post.notify.len(), api::NOTIFY_MAX);
                assert!(post.notify.iter().all(|f| graph[post.author as usize].contains(f)));
                assert_eq!(post.body.len(), api::BODY_BYTES);
            }
        }
        for (count, share) in counts.iter().zip(MIX) {
            let measured = *count as f64 / 40_000.0;
            assert!((measured - f64::from(share) / 100.0).abs() < 0.01, "{counts:?}");
        }
    }
}
