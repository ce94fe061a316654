//! Bearer-token authentication, as the Collector's `bearertokenauth`
//! extension does it: the sender sends `Authorization: Bearer <token>`, the
//! token comes from the config (usually `${env:…}`) or a file that is
//! re-read when it changes.
//!
//! Checks run on the request's headers only, before its body is read, so a
//! refused request costs no decoding and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::secret::Secret;
use super::watch::FileWatch;

/// `auth:` on the receivers, the admin endpoint and the exporter.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The token itself; write `${env:NAME}` rather than the value.
    pub bearer_token: Option<Secret>,
    /// A file holding the token (surrounding whitespace ignored), re-read
    /// when it changes. Exactly one of the two.
    pub bearer_token_file: Option<PathBuf>,
}

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{key}: set exactly one of bearer_token and bearer_token_file")]
    NotExactlyOne { key: &'static str },
    #[error("{key}: the bearer token is empty")]
    Empty { key: &'static str },
    #[error("{key}: cannot read bearer_token_file {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: the bearer token holds characters not allowed in an HTTP header")]
    NotAHeader { key: &'static str },
}

/// How often a token file is checked for a new token.
const TOKEN_FILE_INTERVAL: Duration = Duration::from_secs(5);

/// The token in force, for checking requests or for sending.
pub struct BearerToken {
    /// Config key, for messages (`receivers.otlp.auth`).
    key: &'static str,
    file: Option<PathBuf>,
    current: RwLock<Secret>,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerToken")
            .field("key", &self.key)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl BearerToken {
    /// Reads the token; `key` names the config section in errors.
    pub fn load(config: &AuthConfig, key: &'static str) -> Result<Arc<Self>, AuthError> {
        let token = match (&config.bearer_token, &config.bearer_token_file) {
            (Some(t), None) => t.clone(),
            (None, Some(path)) => read_token(key, path)?,
            _ => return Err(AuthError::NotExactlyOne { key }),
        };
        check_token(key, &token)?;
        Ok(Arc::new(Self {
            key,
            file: config.bearer_token_file.clone(),
            current: RwLock::new(token),
        }))
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`. The
    /// comparison takes the same time wherever the tokens differ.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        self.admits_authorization(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    }

    /// [`BearerToken::admits`] on the `Authorization` value alone (gRPC
    /// metadata hands it out that way).
    pub fn admits_authorization(&self, value: Option<&[u8]>) -> bool {
        let Some(value) = value else {
            return false;
        };
        let Some(scheme) = value.get(..7) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer ") {
            return false;
        }
        self.matches(value[7..].trim_ascii())
    }

    /// The token in force now.
    pub fn secret(&self) -> Secret {
        self.current.read().clone()
    }

    /// Whether `offered` is the token, in the same time wherever they
    /// differ (a password typed into a form or basic auth).
    pub fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.current.read();
        bool::from(offered.ct_eq(expected.expose().as_bytes()))
    }

    /// `Bearer <token>`, marked sensitive so that hyper and h2 keep it out
    /// of their header compression tables and debug output.
    pub fn header_value(&self) -> HeaderValue {
        let current = self.current.read();
        match HeaderValue::from_str(&format!("Bearer {}", current.expose())) {
            Ok(mut v) => {
                v.set_sensitive(true);
                v
            }
            // check_token refused such tokens before they got here.
            Err(_) => HeaderValue::from_static(""),
        }
    }

    /// With a token file, re-reads it when it changes until `stop`. A file
    /// that became unreadable or empty keeps the previous token (logged).
    pub fn spawn_watch(self: &Arc<Self>, stop: CancellationToken) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let mut watch = FileWatch::new(vec![path.clone()]);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TOKEN_FILE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // Ends with the token's last user (the exporter's client).
                if weak.strong_count() == 0 {
                    return;
                }
                if !watch.changed() {
                    continue;
                }
                let Some(this) = weak.upgrade() else { return };
                match read_token(this.key, &path)
                    .and_then(|t| check_token(this.key, &t).map(|()| t))
                {
                    Ok(t) => {
                        *this.current.write() = t;
                        tracing::info!(key = this.key, file = %path.display(), "Bearer token file changed; new token in force.");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "Bearer token file unusable; the previous token stays in force.");
                    }
                }
            }
        });
    }
}

fn read_token(key: &'static str, path: &Path) -> Result<Secret, AuthError> {
    std::fs::read_to_string(path)
        .map(|t| Secret::new(t.trim()))
        .map_err(|source| AuthError::Read {
            key,
            path: path.to_owned(),
            source,
        })
}

fn check_token(key: &'static str, token: &Secret) -> Result<(), AuthError> {
    if token.is_empty() {
        return Err(AuthError::Empty { key });
    }
    if HeaderValue::from_str(token.expose()).is_err() {
        return Err(AuthError::NotAHeader { key });
    }
    Ok(())
}

/// The message of every refusal: it says what is wrong and never what the
/// token is (or what was sent).
pub const REFUSAL: &str = "missing or wrong bearer token";

/// gRPC's answer to a missing or wrong token: UNAUTHENTICATED (final for
/// OTLP senders: they do not retry it), with `www-authenticate: Bearer` as
/// RFC 6750 asks of HTTP.
pub fn grpc_unauthenticated() -> tonic::Status {
    let mut md = tonic::metadata::MetadataMap::new();
    md.insert(
        "www-authenticate",
        tonic::metadata::MetadataValue::from_static("Bearer"),
    );
    tonic::Status::with_metadata(tonic::Code::Unauthenticated, REFUSAL, md)
}

/// Whether a request is gRPC (the admin port serves both).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(t: &str) -> Arc<BearerToken> {
        BearerToken::load(
            &AuthConfig {
                bearer_token: Some(Secret::new(t)),
                bearer_token_file: None,
            },
            "test.auth",
        )
        .unwrap()
    }

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn only_the_exact_token_is_admitted() {
        let t = token("s3cret");
        assert!(t.admits(&with_auth("Bearer s3cret")));
        assert!(t.admits(&with_auth("bearer s3cret")));
        assert!(!t.admits(&with_auth("Bearer s3cre")));
        assert!(!t.admits(&with_auth("Bearer s3cret2")));
        assert!(!t.admits(&with_auth("Basic s3cret")));
        assert!(!t.admits(&with_auth("s3cret")));
        assert!(!t.admits(&HeaderMap::new()));
    }

    #[test]
    fn both_or_neither_source_is_an_error() {
        let both = AuthConfig {
            bearer_token: Some(Secret::new("a")),
            bearer_token_file: Some("/x".into()),
        };
        assert!(BearerToken::load(&both, "k").is_err());
        assert!(BearerToken::load(&AuthConfig::default(), "k").is_err());
        let empty = AuthConfig {
            bearer_token: Some(Secret::new("")),
            bearer_token_file: None,
        };
        assert!(matches!(
            BearerToken::load(&empty, "k"),
            Err(AuthError::Empty { .. })
        ));
    }

    #[test]
    fn the_token_file_is_trimmed_and_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let t = BearerToken::load(
            &AuthConfig {
                bearer_token: None,
                bearer_token_file: Some(path),
            },
            "k",
        )
        .unwrap();
        assert!(t.admits(&with_auth("Bearer from-file")));
        assert!(!format!("{t:?}").contains("from-file"));
    }
}
