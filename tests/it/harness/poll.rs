//! Bounded polling: one way for a test to wait until something happens.

use std::time::Duration;

/// How long a poll waits, unless a test says otherwise: long enough for a loaded machine.
/// No timing assertion: it only makes a broken build fail instead of hanging.
pub(crate) const BOUND: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds. Past `bound` (see [`BOUND`]) it panics naming `what`.
pub(crate) async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    bound: Duration,
    mut cond: impl FnMut() -> F,
) {
    eventually_ok(what, bound, || {
        let f = cond();
        async move { if f.await { Ok(()) } else { Err("false") } }
    })
    .await
}

/// Polls `poll` until it gives `Ok`, and returns that. Past `bound` (see [`BOUND`]) it
/// panics naming `what` and the last `Err` seen.
pub(crate) async fn eventually_ok<
    T,
    E: std::fmt::Debug,
    F: std::future::Future<Output = Result<T, E>>,
>(
    what: &str,
    bound: Duration,
    mut poll: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + bound;
    loop {
        match poll().await {
            Ok(v) => return v,
            Err(last) if std::time::Instant::now() >= deadline => {
                panic!("never happened: {what}; last seen: {last:#?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}
