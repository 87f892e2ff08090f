//! The internal credential: only the gateway, which holds the shared token, may start runs.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::config::{ConfigError, Lookup};
use crate::error::ApiError;

/// Header the gateway puts the token in.
pub const TOKEN_HEADER: &str = "x-trine-internal-token";

/// Shortest token accepted; anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// The shared secret callers must present. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct InternalToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for InternalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalToken(..)")
    }
}

impl InternalToken {
    /// Accepts `secret` if it is long enough to be a credential.
    pub fn new(secret: &str) -> Result<Self, ConfigError> {
        if secret.chars().count() < MIN_TOKEN_LEN {
            return Err(ConfigError::TokenTooShort { min: MIN_TOKEN_LEN });
        }
        Ok(InternalToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
        })
    }

    /// Reads `TRINE_INTERNAL_TOKEN`, which must be set.
    pub fn from_lookup(env: &impl Lookup) -> Result<Self, ConfigError> {
        match env.get("TRINE_INTERNAL_TOKEN") {
            Some(secret) if !secret.is_empty() => Self::new(&secret),
            _ => Err(ConfigError::Missing("TRINE_INTERNAL_TOKEN")),
        }
    }

    /// Whether `presented` is the token. Both sides are hashed first so the comparison takes
    /// the same time whatever the presented length, and is then done in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        self.digest.ct_eq(&presented).into()
    }
}

/// Middleware refusing requests that lack the internal token, before their body is read.
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
    match presented {
        Some(value) if state.token.matches(value) => Ok(next.run(request).await),
        _ => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = InternalToken::new("0123456789abcdef").unwrap();
        assert!(token.matches(b"0123456789abcdef"));
        assert!(!token.matches(b"0123456789abcdeF"));
        assert!(!token.matches(b"0123456789abcdef0"));
        assert!(!token.matches(b""));
    }

    #[test]
    fn short_or_missing_tokens_are_refused() {
        assert!(matches!(
            InternalToken::new("short"),
            Err(ConfigError::TokenTooShort { .. })
        ));
        let unset = |_: &str| None;
        assert_eq!(
            InternalToken::from_lookup(&unset).unwrap_err(),
            ConfigError::Missing("TRINE_INTERNAL_TOKEN")
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let token = InternalToken::new("0123456789abcdef").unwrap();
        assert!(!format!("{token:?}").contains("0123"));
    }
}
