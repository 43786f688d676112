//! One login session per remote: the token cache and the "the remote
//! refused our token: log in once more and try again" rule, written once for
//! every connector that logs in (CloudSuite's OAuth2 token, Vinou's JWT,
//! Titelive's SYSTEM-bound token). A connector supplies how to log in and how
//! the remote says "this token is no good"; the session decides when a token
//! is still good, renews it a little before it runs out, bounds a lifetime a
//! remote names (a wild `expires_in` can neither overflow a clock nor pin a
//! token for years), and makes concurrent callers that hit the same refusal
//! share one new login.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Failure;
use crate::secret::Secret;

/// The longest a token is trusted, whatever the remote says.
pub const MAX_LIFETIME: Duration = Duration::from_secs(86_400);
/// Renewal starts this share of the lifetime early, at most [`MAX_MARGIN`].
const MARGIN_DIVISOR: u32 = 10;
const MAX_MARGIN: Duration = Duration::from_secs(60);

/// What a login gives: the token and, when the remote says, how long it lives.
pub struct Issued {
    pub token: Secret,
    /// `None`: until the remote refuses it.
    pub lifetime: Option<Duration>,
}

#[derive(Default)]
pub struct Session {
    cached: Mutex<Option<(Secret, Option<Instant>)>>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// The current token, logging in when there is none or it is about to
    /// run out.
    pub async fn token<L, F>(&self, login: L) -> Result<Secret, Failure>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Issued, Failure>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && until.is_none_or(|u| u > Instant::now())
        {
            return Ok(token.clone());
        }
        let issued = login().await?;
        Ok(store(&mut cached, issued))
    }

    /// The remote refused `rejected`: a new token, unless a concurrent call
    /// already got one (then that one).
    pub async fn renew<L, F>(&self, rejected: &Secret, login: L) -> Result<Secret, Failure>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Issued, Failure>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some((token, _)) = cached.as_ref()
            && token != rejected
        {
            return Ok(token.clone());
        }
        *cached = None;
        let issued = login().await?;
        Ok(store(&mut cached, issued))
    }

    /// Runs `call` with the current token; when `refused` says the remote
    /// did not take the token, logs in once more and runs it once again.
    pub async fn call<R, L, LF, C, CF>(
        &self,
        login: L,
        call: C,
        refused: impl Fn(&Result<R, Failure>) -> bool,
    ) -> Result<R, Failure>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<Issued, Failure>>,
        C: Fn(Secret) -> CF,
        CF: Future<Output = Result<R, Failure>>,
    {
        let token = self.token(&login).await?;
        let first = call(token.clone()).await;
        if !refused(&first) {
            return first;
        }
        tracing::debug!("the remote refused our token; logging in again");
        let token = self.renew(&token, &login).await?;
        call(token).await
    }
}

/// Caches `issued`, renewing early by a bounded margin.
fn store(slot: &mut Option<(Secret, Option<Instant>)>, issued: Issued) -> Secret {
    let until = issued.lifetime.map(|life| {
        let life = life.min(MAX_LIFETIME);
        let margin = (life / MARGIN_DIVISOR).min(MAX_MARGIN);
        Instant::now() + life.saturating_sub(margin)
    });
    *slot = Some((issued.token.clone(), until));
    issued.token
}

/// A refusal by HTTP status 401 (the usual way).
pub fn refused_401<R>(result: &Result<R, Failure>) -> bool {
    matches!(result, Err(f) if f.status() == Some(401))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn issuing(
        logins: &Arc<AtomicUsize>,
        lifetime: Option<Duration>,
    ) -> impl Fn() -> std::future::Ready<Result<Issued, Failure>> + use<> {
        let logins = Arc::clone(logins);
        move || {
            let n = logins.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Issued {
                token: Secret::new(format!("token-number-{n}")),
                lifetime,
            }))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_shortly_before_it_runs_out() {
        let logins = Arc::new(AtomicUsize::new(0));
        let s = Session::new();
        let login = issuing(&logins, Some(Duration::from_secs(300)));
        let a = s.token(&login).await.unwrap();
        tokio::time::advance(Duration::from_secs(260)).await;
        assert_eq!(s.token(&login).await.unwrap(), a, "still good");
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_ne!(s.token(&login).await.unwrap(), a, "renewed 30 s early");
        assert_eq!(logins.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wild_lifetime_is_bounded_and_cannot_overflow() {
        let logins = Arc::new(AtomicUsize::new(0));
        let s = Session::new();
        let login = issuing(&logins, Some(Duration::from_secs(u64::MAX)));
        let a = s.token(&login).await.unwrap();
        tokio::time::advance(MAX_LIFETIME).await;
        assert_ne!(s.token(&login).await.unwrap(), a);
    }

    #[tokio::test]
    async fn a_refusal_logs_in_once_more_and_tries_once_again() {
        let logins = Arc::new(AtomicUsize::new(0));
        let s = Session::new();
        let calls = AtomicUsize::new(0);
        let always_refused = |_t: Secret| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Err::<(), _>(Failure::Permanent {
                message: "401".into(),
                status: Some(401),
            }))
        };
        let r = s
            .call(issuing(&logins, None), always_refused, refused_401)
            .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one more try, not a loop");
        assert_eq!(logins.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn callers_refused_together_share_one_new_login() {
        let logins = Arc::new(AtomicUsize::new(0));
        let s = Session::new();
        let login = issuing(&logins, None);
        let old = s.token(&login).await.unwrap();
        let first = s.renew(&old, &login).await.unwrap();
        let second = s.renew(&old, &login).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(logins.load(Ordering::SeqCst), 2);
    }
}
