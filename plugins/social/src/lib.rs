//! The social network workload (Retwis as Boki ran it, see shared WORKLOADS.md).
//!
//! Tables, after Boki's objects: `users` holds a [`User`] (name, followers, followees)
//! under the big-endian user id (`userid:`), `names` the [`Credentials`] under the user
//! name (`username:`), `posts` a [`Post`] under its big-endian id (`post:`), and
//! `timelines` a [`Timeline`] under the user id, plus the global timeline under
//! [`GLOBAL_TIMELINE_KEY`].
//!
//! * `login(username, password)`, `profile(user)` and `post_list(user or global)` are
//!   read-only.
//! * `post(post_id, author, body, notify)` is one transaction over write_post => notify:
//!   it stores the post and appends it to the timelines of the followers named in `notify`
//!   (at most four; each must follow the author, or the whole post aborts) and to the
//!   global timeline, each cut to its newest posts as Boki's `ArrayPushBackWithLimit` does.
//!   Boki appends to the global timeline after its transaction; here it is part of it.
//! * `load` creates users with their follow graph; `audit_timelines` and `audit_posts` let
//!   the harness check the invariant: every timeline holds exactly the newest committed
//!   posts that notified it, in commit order, and every committed post is stored.

pub use leasehold_plugin_api::social::*;
use leasehold_sdk::prelude::*;

pub const USERS: Table = Table(0);
pub const NAMES: Table = Table(1);
pub const POSTS: Table = Table(2);
pub const TIMELINES: Table = Table(3);

/// The key of the global timeline in `timelines`: user keys are eight bytes, so a key of
/// another length cannot collide with one.
pub const GLOBAL_TIMELINE_KEY: &[u8] = b"global";

/// Largest post: the longest body, a user name and two ids.
const POST_BYTES_MAX: u32 = BODY_BYTES_MAX as u32 + 256;
/// Largest user record: the longest follow lists.
const USER_BYTES_MAX: u32 = 2 * 10 * FOLLOWS_MAX as u32 + 512;
/// Largest timeline: the global one full of the longest posts.
const TIMELINE_BYTES_MAX: u32 = GLOBAL_TIMELINE_MAX as u32 * POST_BYTES_MAX + 16;

/// An authentication token per user that does not look like a counter (Boki draws a random
/// one at registration; a plugin has no randomness of its own, so it is a hash of the id).
fn auth_token(user_id: u64) -> u64 {
    let mut value = user_id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    value ^ (value >> 31)
}

fn check_range(first: u64, count: u64) -> Result<(), Abort> {
    if count == 0 || count > RANGE_MAX || first.checked_add(count).is_none() {
        return Err(Abort::new(format!("count must be in 1..={RANGE_MAX} and the range must not overflow")));
    }
    Ok(())
}

fn check_post(args: &NewPost) -> Result<(), Abort> {
    if args.body.len() > BODY_BYTES_MAX {
        return Err(Abort::new(format!("a post body has at most {BODY_BYTES_MAX} bytes")));
    }
    if args.notify.len() > NOTIFY_MAX {
        return Err(Abort::new(format!("a post notifies at most {NOTIFY_MAX} followers")));
    }
    for (index, follower) in args.notify.iter().enumerate() {
        if *follower == args.author || args.notify[..index].contains(follower) {
            return Err(Abort::new(format!("follower {follower} is the author or named twice")));
        }
    }
    Ok(())
}

fn timeline_key(user_id: Option<u64>) -> Vec<u8> {
    user_id.map_or_else(|| GLOBAL_TIMELINE_KEY.to_vec(), |id| key_u64(id).to_vec())
}

fn read_user(ctx: &Context, user_id: u64) -> Result<User, Abort> {
    ctx.read_value(USERS, &key_u64(user_id))?.ok_or_else(|| Abort::new(format!("no user {user_id}")))
}

fn login(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Login = ctx.arguments()?;
    let credentials: Credentials = ctx
        .read_value(NAMES, args.username.as_bytes())?
        .ok_or_else(|| Abort::new(format!("user name {:?} does not exist", args.username)))?;
    if credentials.password != args.password {
        return Err(Abort::new("incorrect password"));
    }
    encode(&LoggedIn { user_id: credentials.user_id, auth: credentials.auth })
}

fn profile(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Profile = ctx.arguments()?;
    let user = read_user(ctx, args.user_id)?;
    let timeline: Timeline = ctx.read_value(TIMELINES, &key_u64(args.user_id))?.unwrap_or_default();
    encode(&ProfileView {
        username: user.username,
        followers: user.followers.len() as u64,
        followees: user.followees.len() as u64,
        posts: timeline.posts.len() as u64,
    })
}

fn post_list(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: PostList = ctx.arguments()?;
    let timeline: Option<Timeline> = ctx.read_value(TIMELINES, &timeline_key(args.user_id))?;
    let timeline = match (timeline, args.user_id) {
        (Some(timeline), _) => timeline,
        // Nobody has posted yet.
        (None, None) => Timeline::default(),
        (None, Some(user_id)) => return Err(Abort::new(format!("no user {user_id}"))),
    };
    encode(&Posts { posts: timeline.posts.into_iter().rev().take(POST_LIST_MAX).collect() })
}

fn write_post(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: NewPost = ctx.arguments()?;
    let author = read_user(ctx, args.author)?;
    if let Some(stranger) = args.notify.iter().find(|follower| !author.followers.contains(follower)) {
        return Err(Abort::new(format!("user {stranger} does not follow user {}", args.author)));
    }
    let key = key_u64(args.post_id);
    if ctx.read(POSTS, &key)?.is_some() {
        return Err(Abort::new(format!("post id {} is taken", args.post_id)));
    }
    let post = Post { post_id: args.post_id, author: args.author, author_name: author.username, body: args.body };
    ctx.write_value(POSTS, &key, &post)?;
    encode(&post)
}

/// Appends `post` to the timeline under `key`, keeping its newest `limit` posts.
fn push_with_limit(ctx: &mut Context, key: &[u8], post: &Post, limit: usize) -> Result<(), Abort> {
    let mut timeline: Timeline = ctx.read_value(TIMELINES, key)?.unwrap_or_default();
    timeline.posts.push(post.clone());
    let excess = timeline.posts.len().saturating_sub(limit);
    timeline.posts.drain(..excess);
    ctx.write_value(TIMELINES, key, &timeline)
}

fn notify(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: NewPost = ctx.arguments()?;
    let post: Post = ctx.parent(0)?;
    for follower in &args.notify {
        push_with_limit(ctx, &key_u64(*follower), &post, USER_TIMELINE_MAX)?;
    }
    push_with_limit(ctx, GLOBAL_TIMELINE_KEY, &post, GLOBAL_TIMELINE_MAX)?;
    encode(&Posted { post_id: post.post_id, author: post.author, notified: args.notify })
}

fn load(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Load = ctx.arguments()?;
    for new_user in &args.users {
        let (id, name) = (new_user.user_id, user_name(new_user.user_id));
        let user = User {
            user_id: id,
            username: name.clone(),
            followers: new_user.followers.clone(),
            followees: new_user.followees.clone(),
        };
        ctx.write_value(USERS, &key_u64(id), &user)?;
        let credentials = Credentials { user_id: id, password: password(id), auth: auth_token(id) };
        ctx.write_value(NAMES, name.as_bytes(), &credentials)?;
        ctx.write_value(TIMELINES, &key_u64(id), &Timeline::default())?;
    }
    encode(&(args.users.len() as u64))
}

fn audit_timelines(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: AuditTimelines = ctx.arguments()?;
    let users = (args.first..args.first + args.count)
        .map(|id| ctx.read_value(TIMELINES, &key_u64(id)))
        .collect::<Result<_, _>>()?;
    let global = if args.global { ctx.read_value(TIMELINES, GLOBAL_TIMELINE_KEY)? } else { None };
    encode(&TimelinesReport { users, global })
}

fn audit_posts(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: AuditPosts = ctx.arguments()?;
    let posts = args.ids.iter().map(|id| ctx.read_value(POSTS, &key_u64(*id))).collect::<Result<_, _>>()?;
    encode(&PostsReport { posts })
}

export_plugin!(|| {
    Plugin::new("social", env!("CARGO_PKG_VERSION"))
        .table(USERS, "users", USER_BYTES_MAX)
        .table(NAMES, "names", 1024)
        .table(POSTS, "posts", POST_BYTES_MAX)
        .table(TIMELINES, "timelines", TIMELINE_BYTES_MAX)
        .function("login", login)
        .function("profile", profile)
        .function("post_list", post_list)
        .function("write_post", write_post)
        .function("notify", notify)
        .function("load", load)
        .function("audit_timelines", audit_timelines)
        .function("audit_posts", audit_posts)
        .workflow::<Login, LoggedIn>("login", |args, plan| {
            plan.read(NAMES, args.username.as_bytes());
            Ok(())
        })
        .step("login", &[])
        .done()
        .workflow::<Profile, ProfileView>("profile", |args, plan| {
            plan.read(USERS, &key_u64(args.user_id));
            plan.read(TIMELINES, &key_u64(args.user_id));
            Ok(())
        })
        .step("profile", &[])
        .done()
        .workflow::<PostList, Posts>("post_list", |args, plan| {
            plan.read(TIMELINES, &timeline_key(args.user_id));
            Ok(())
        })
        .step("post_list", &[])
        .done()
        .workflow::<NewPost, Posted>("post", |args, plan| {
            check_post(args)?;
            plan.read(USERS, &key_u64(args.author));
            plan.write(POSTS, &key_u64(args.post_id));
            for follower in &args.notify {
                plan.write(TIMELINES, &key_u64(*follower));
            }
            plan.write(TIMELINES, GLOBAL_TIMELINE_KEY);
            Ok(())
        })
        .step("write_post", &[])
        .step("notify", &["write_post"])
        .done()
        .workflow::<Load, u64>("load", |args, plan| {
            if args.users.is_empty() || args.users.len() as u64 > RANGE_MAX {
                return Err(Abort::new(format!("load creates 1..={RANGE_MAX} users")));
            }
            for user in &args.users {
                if user.followers.len() > FOLLOWS_MAX || user.followees.len() > FOLLOWS_MAX {
                    return Err(Abort::new(format!("a user has at most {FOLLOWS_MAX} followers and followees")));
                }
                plan.write(USERS, &key_u64(user.user_id));
                plan.write(NAMES, user_name(user.user_id).as_bytes());
                plan.write(TIMELINES, &key_u64(user.user_id));
            }
            Ok(())
        })
        .step("load", &[])
        .done()
        .workflow::<AuditTimelines, TimelinesReport>("audit_timelines", |args, plan| {
            check_range(args.first, args.count)?;
            for id in args.first..args.first + args.count {
                plan.read(TIMELINES, &key_u64(id));
            }
            if args.global {
                plan.read(TIMELINES, GLOBAL_TIMELINE_KEY);
            }
            Ok(())
        })
        .step("audit_timelines", &[])
        .done()
        .workflow::<AuditPosts, PostsReport>("audit_posts", |args, plan| {
            if args.ids.len() as u64 > RANGE_MAX {
                return Err(Abort::new(format!("audit_posts reads at most {RANGE_MAX} posts")));
            }
            for id in &args.ids {
                plan.read(POSTS, &key_u64(*id));
            }
            Ok(())
        })
        .step("audit_posts", &[])
        .done()
});
