//! The movie review workload (DeathStarBench's media service, compose-review, see shared
//! WORKLOADS.md).
//!
//! Tables, after DeathStarBench's services: `users` holds a [`User`] under the user name
//! (user service), `movies` a [`Movie`] with its rating count and sum under the title
//! (movie-id and rating services), `reviews` a [`Review`] under its big-endian id (review
//! storage), and `movie_reviews` and `user_reviews` a [`ReviewList`] under the title and the
//! user name (movie-review and user-review services).
//!
//! * `compose_review(review_id, username, password, title, rating, text)` is one
//!   transaction over the chain login => rate => store_review: login checks the password,
//!   rate adds the rating to the movie, store_review stores the review and puts it at the
//!   head of its movie's and its user's lists. A wrong password, an unknown movie or a
//!   taken review id aborts all of it.
//! * `load` creates movies and users; `audit_lists` and `audit_reviews` return the lists and
//!   the reviews so that the harness can check the invariant: every committed review is on
//!   its movie's list and its user's list exactly once, in commit order, and each movie's
//!   rating count and sum are those of its reviews.
//!
//! A list is linked through its reviews (each review names the next older one of its movie
//! and of its user) rather than kept as an array in one value: values stay small however
//! many reviews a run writes, and every key a compose touches follows from its arguments,
//! which is what the engine plans transactions from.

pub use leasehold_plugin_api::movie::*;
use leasehold_sdk::prelude::*;

pub const USERS: Table = Table(0);
pub const MOVIES: Table = Table(1);
pub const REVIEWS: Table = Table(2);
pub const MOVIE_REVIEWS: Table = Table(3);
pub const USER_REVIEWS: Table = Table(4);

/// Largest user or movie record: two short strings and a few numbers.
const RECORD_BYTES_MAX: u32 = 4096;
/// Largest review: the longest text plus its numbers.
const REVIEW_BYTES_MAX: u32 = TEXT_BYTES_MAX as u32 + 128;

fn check_range(first: u64, count: u64) -> Result<(), Abort> {
    if count == 0 || count > RANGE_MAX || first.checked_add(count).is_none() {
        return Err(Abort::new(format!("count must be in 1..={RANGE_MAX} and the range must not overflow")));
    }
    Ok(())
}

fn check_compose(args: &ComposeReview) -> Result<(), Abort> {
    if args.rating > RATING_MAX {
        return Err(Abort::new(format!("rating {} is above {RATING_MAX}", args.rating)));
    }
    if args.text.len() > TEXT_BYTES_MAX {
        return Err(Abort::new(format!("review text of {} bytes is longer than {TEXT_BYTES_MAX}", args.text.len())));
    }
    Ok(())
}

fn login(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: ComposeReview = ctx.arguments()?;
    let user: User = ctx
        .read_value(USERS, args.username.as_bytes())?
        .ok_or_else(|| Abort::new(format!("no user {}", args.username)))?;
    if user.password != args.password {
        return Err(Abort::new(format!("incorrect password for {}", args.username)));
    }
    encode(&LoggedIn { user_id: user.user_id })
}

fn rate(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: ComposeReview = ctx.arguments()?;
    let logged_in: LoggedIn = ctx.parent(0)?;
    let key = args.title.as_bytes();
    let mut movie: Movie =
        ctx.read_value(MOVIES, key)?.ok_or_else(|| Abort::new(format!("no movie {:?}", args.title)))?;
    movie.rating_count += 1;
    movie.rating_sum += u64::from(args.rating);
    ctx.write_value(MOVIES, key, &movie)?;
    encode(&Rated { user_id: logged_in.user_id, movie_id: movie.movie_id })
}

fn read_list(ctx: &Context, table: Table, key: &str, kind: &str) -> Result<ReviewList, Abort> {
    ctx.read_value(table, key.as_bytes())?.ok_or_else(|| Abort::new(format!("no review list for {kind} {key:?}")))
}

fn store_review(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: ComposeReview = ctx.arguments()?;
    let rated: Rated = ctx.parent(0)?;
    let review_key = key_u64(args.review_id);
    if ctx.read(REVIEWS, &review_key)?.is_some() {
        return Err(Abort::new(format!("review id {} is taken", args.review_id)));
    }
    let mut movie_list = read_list(ctx, MOVIE_REVIEWS, &args.title, "movie")?;
    let mut user_list = read_list(ctx, USER_REVIEWS, &args.username, "user")?;
    let review = Review {
        review_id: args.review_id,
        user_id: rated.user_id,
        movie_id: rated.movie_id,
        rating: args.rating,
        text: args.text,
        older_by_movie: movie_list.newest,
        older_by_user: user_list.newest,
    };
    ctx.write_value(REVIEWS, &review_key, &review)?;
    for list in [&mut movie_list, &mut user_list] {
        list.count += 1;
        list.newest = Some(args.review_id);
    }
    ctx.write_value(MOVIE_REVIEWS, args.title.as_bytes(), &movie_list)?;
    ctx.write_value(USER_REVIEWS, args.username.as_bytes(), &user_list)?;
    encode(&Composed {
        review_id: args.review_id,
        user_id: rated.user_id,
        movie_id: rated.movie_id,
        rating: args.rating,
        movie_reviews: movie_list.count,
        user_reviews: user_list.count,
    })
}

fn load(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: Load = ctx.arguments()?;
    for index in args.first..args.first + args.count {
        let (name, title) = (username(index), title(index));
        ctx.write_value(
            USERS,
            name.as_bytes(),
            &User { user_id: index, username: name.clone(), password: password(index) },
        )?;
        ctx.write_value(
            MOVIES,
            title.as_bytes(),
            &Movie { movie_id: index, title: title.clone(), rating_count: 0, rating_sum: 0 },
        )?;
        ctx.write_value(MOVIE_REVIEWS, title.as_bytes(), &ReviewList::default())?;
        ctx.write_value(USER_REVIEWS, name.as_bytes(), &ReviewList::default())?;
    }
    encode(&args.count)
}

fn audit_lists(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: AuditLists = ctx.arguments()?;
    let range = args.first..args.first + args.count;
    let movies =
        range.clone().map(|index| ctx.read_value(MOVIES, title(index).as_bytes())).collect::<Result<_, _>>()?;
    let movie_reviews =
        range.clone().map(|index| ctx.read_value(MOVIE_REVIEWS, title(index).as_bytes())).collect::<Result<_, _>>()?;
    let user_reviews =
        range.map(|index| ctx.read_value(USER_REVIEWS, username(index).as_bytes())).collect::<Result<_, _>>()?;
    encode(&ListsReport { movies, movie_reviews, user_reviews })
}

fn audit_reviews(ctx: &mut Context) -> Result<Vec<u8>, Abort> {
    let args: AuditReviews = ctx.arguments()?;
    let mut summaries = Vec::with_capacity(args.ids.len());
    for id in args.ids {
        let review: Option<Review> = ctx.read_value(REVIEWS, &key_u64(id))?;
        summaries.push(review.map(|review| ReviewSummary {
            review_id: review.review_id,
            user_id: review.user_id,
            movie_id: review.movie_id,
            rating: review.rating,
            text_bytes: review.text.len() as u32,
            older_by_movie: review.older_by_movie,
            older_by_user: review.older_by_user,
        }));
    }
    encode(&summaries)
}

export_plugin!(|| {
    Plugin::new("movie", env!("CARGO_PKG_VERSION"))
        .table(USERS, "users", RECORD_BYTES_MAX)
        .table(MOVIES, "movies", RECORD_BYTES_MAX)
        .table(REVIEWS, "reviews", REVIEW_BYTES_MAX)
        .table(MOVIE_REVIEWS, "movie_reviews", 64)
        .table(USER_REVIEWS, "user_reviews", 64)
        .function("login", login)
        .function("rate", rate)
        .function("store_review", store_review)
        .function("load", load)
        .function("audit_lists", audit_lists)
        .function("audit_reviews", audit_reviews)
        .workflow::<ComposeReview, Composed>("compose_review", |args, plan| {
            check_compose(args)?;
            plan.read(USERS, args.username.as_bytes());
            plan.write(MOVIES, args.title.as_bytes());
            plan.write(REVIEWS, &key_u64(args.review_id));
            plan.write(MOVIE_REVIEWS, args.title.as_bytes());
            plan.write(USER_REVIEWS, args.username.as_bytes());
            Ok(())
        })
        .step("login", &[])
        .step("rate", &["login"])
        .step("store_review", &["rate"])
        .done()
        .workflow::<Load, u64>("load", |args, plan| {
            check_range(args.first, args.count)?;
            for index in args.first..args.first + args.count {
                let (name, title) = (username(index), title(index));
                plan.write(USERS, name.as_bytes());
                plan.write(MOVIES, title.as_bytes());
                plan.write(MOVIE_REVIEWS, title.as_bytes());
                plan.write(USER_REVIEWS, name.as_bytes());
            }
            Ok(())
        })
        .step("load", &[])
        .done()
        .workflow::<AuditLists, ListsReport>("audit_lists", |args, plan| {
            check_range(args.first, args.count)?;
            for index in args.first..args.first + args.count {
                plan.read(MOVIES, title(index).as_bytes());
                plan.read(MOVIE_REVIEWS, title(index).as_bytes());
                plan.read(USER_REVIEWS, username(index).as_bytes());
            }
            Ok(())
        })
        .step("audit_lists", &[])
        .done()
        .workflow::<AuditReviews, Vec<Option<ReviewSummary>>>("audit_reviews", |args, plan| {
            if args.ids.len() as u64 > RANGE_MAX {
                return Err(Abort::new(format!("audit_reviews reads at most {RANGE_MAX} reviews")));
            }
            for id in &args.ids {
                plan.read(REVIEWS, &key_u64(*id));
            }
            Ok(())
        })
        .step("audit_reviews", &[])
        .done()
});
