//! Client authentication: signed login tokens (HS256 JWT).
//!
//! A token's subject (`sub`) is the user name it lets in, `exp` its expiry
//! (required). The secret comes from a flag, env var or file; without one,
//! authentication is off and any `login` is accepted. This module only
//! issues and checks tokens; the message server decides what a failure
//! means.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// Why a token was refused (shown to the client in the error message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("login requires a token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another name")]
    WrongName,
    #[error("invalid token")]
    Invalid,
}

#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Expiry is exact: a token past its `exp` is refused at once.
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Accepts `token` for a login as `name`.
    pub fn verify(&self, name: &str, token: Option<&str>) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        if data.claims.sub != name {
            return Err(AuthError::WrongName);
        }
        Ok(())
    }

    /// A token letting `name` log in for `ttl_secs` seconds.
    pub fn issue(&self, name: &str, ttl_secs: u64) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: name.to_owned(),
            exp: now + ttl_secs,
            iat: Some(now),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// A token that expired `ago_secs` seconds ago (for tests and demos).
    pub fn issue_expired(&self, name: &str, ago_secs: u64) -> String {
        let now = unix_now();
        let claims = Claims {
            sub: name.to_owned(),
            exp: now.saturating_sub(ago_secs),
            iat: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_own_tokens_for_the_right_name() {
        let a = Authenticator::new(SECRET);
        let t = a.issue("alice", 60);
        assert_eq!(a.verify("alice", Some(&t)), Ok(()));
        assert_eq!(a.verify("bob", Some(&t)), Err(AuthError::WrongName));
    }

    #[test]
    fn refuses_missing_expired_and_forged_tokens() {
        let a = Authenticator::new(SECRET);
        assert_eq!(a.verify("alice", None), Err(AuthError::Missing));
        assert_eq!(
            a.verify("alice", Some(&a.issue_expired("alice", 10))),
            Err(AuthError::Expired)
        );
        let forger = Authenticator::new(b"another-secret-of-enough-length");
        assert_eq!(
            a.verify("alice", Some(&forger.issue("alice", 60))),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            a.verify("alice", Some("not.a.jwt")),
            Err(AuthError::Invalid)
        );
    }

    /// A token signed with `SECRET` under `alg`, with these claims.
    fn signed(alg: Algorithm, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn valid_claims() -> serde_json::Value {
        serde_json::json!({"sub": "alice", "exp": unix_now() + 60})
    }

    #[test]
    fn refuses_other_algorithms_even_signed_with_the_secret() {
        let a = Authenticator::new(SECRET);
        assert_eq!(
            a.verify("alice", Some(&signed(Algorithm::HS256, valid_claims()))),
            Ok(()),
            "the same claims under HS256 pass"
        );
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = signed(alg, valid_claims());
            assert_eq!(
                a.verify("alice", Some(&token)),
                Err(AuthError::Invalid),
                "{alg:?}"
            );
        }
    }

    #[test]
    fn refuses_unsigned_and_public_key_headers() {
        // base64url of {"alg":"none","typ":"JWT"} and {"alg":"RS256","typ":"JWT"}.
        const NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        const RS256: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9";
        let a = Authenticator::new(SECRET);
        let genuine = signed(Algorithm::HS256, valid_claims());
        let (_, rest) = genuine.split_once('.').unwrap();
        let (claims, signature) = rest.split_once('.').unwrap();
        for token in [
            format!("{NONE}.{claims}."),
            format!("{NONE}.{claims}.{signature}"),
            format!("{RS256}.{claims}.{signature}"),
        ] {
            assert_eq!(
                a.verify("alice", Some(&token)),
                Err(AuthError::Invalid),
                "{token}"
            );
        }
    }

    #[test]
    fn refuses_tokens_without_exp_or_sub() {
        let a = Authenticator::new(SECRET);
        let no_exp = signed(Algorithm::HS256, serde_json::json!({"sub": "alice"}));
        let no_sub = signed(
            Algorithm::HS256,
            serde_json::json!({"exp": unix_now() + 60}),
        );
        assert_eq!(a.verify("alice", Some(&no_exp)), Err(AuthError::Invalid));
        assert_eq!(a.verify("alice", Some(&no_sub)), Err(AuthError::Invalid));
    }
}
