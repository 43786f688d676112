//! Vinou's "Service" login: `POST /service/login` with the API token and the
//! AuthID returns a JWT, sent as `Authorization: Bearer` on every call. The
//! JWT lives about 12 h ("may get shorter", says Vinou), so its lifetime is
//! read from its own `exp` claim, and a 401 always logs in again once.

use std::time::Duration;

use serde::Deserialize;

use crate::http::session::Issued;
use crate::http::{Endpoint, Failure};
use crate::secret::Secret;

/// Used when a JWT carries no readable `exp`: short, so a token of unknown
/// life is renewed early rather than late.
const UNKNOWN_LIFETIME: Duration = Duration::from_secs(3600);

pub struct Login {
    pub url: String,
    pub auth_id: String,
    pub api_token: Secret,
}

#[derive(Deserialize)]
struct LoginAnswer {
    token: String,
}

impl Login {
    pub fn new(url: String, auth_id: String, api_token: Secret) -> Login {
        Login {
            url,
            auth_id,
            api_token,
        }
    }

    /// Logs in: a JWT whose lifetime is its own `exp` claim (short when it
    /// has none). Caching and renewal are the session's
    /// ([`crate::http::session::Session`]).
    pub async fn log_in(&self, endpoint: &Endpoint) -> Result<Issued, Failure> {
        let body = serde_json::json!({
            "token": self.api_token.expose(),
            "authid": self.auth_id,
        });
        let reply = endpoint
            .send(endpoint.client().post(&self.url).json(&body))
            .await
            .map_err(|f| {
                let hint = match f.status() {
                    Some(400 | 401 | 403) => "; check auth_id and the api_token file",
                    _ => "",
                };
                f.context(&format!("Vinou login failed{hint}"))
            })?;
        let answer: LoginAnswer = reply.json()?;
        Ok(Issued {
            lifetime: Some(jwt_lifetime(&answer.token).unwrap_or(UNKNOWN_LIFETIME)),
            token: Secret::new(answer.token),
        })
    }
}

/// Seconds from now until the JWT's `exp` claim (0 if already past).
fn jwt_lifetime(jwt: &str) -> Option<Duration> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims["exp"].as_i64()?;
    let left = exp - chrono::Utc::now().timestamp();
    Some(Duration::from_secs(left.max(0) as u64))
}

/// Unpadded base64url (RFC 4648 §5), as JWTs use it.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64url() {
        assert_eq!(base64url_decode("eyJleHAiOjF9").unwrap(), br#"{"exp":1}"#);
        assert_eq!(base64url_decode("YQ").unwrap(), b"a");
        assert_eq!(base64url_decode("_-8").unwrap(), vec![0xff, 0xef]);
        assert_eq!(base64url_decode("eyJleHAiOjF9==").unwrap(), br#"{"exp":1}"#);
        assert!(base64url_decode("a b").is_none());
    }

    #[test]
    fn lifetime_comes_from_exp() {
        let exp = chrono::Utc::now().timestamp() + 120;
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{{\"exp\":{exp}}}").as_bytes());
        let life = jwt_lifetime(&format!("x.{payload}.sig")).unwrap();
        assert!(life <= Duration::from_secs(120) && life >= Duration::from_secs(100));
        assert!(jwt_lifetime("not-a-jwt").is_none());
    }
}
