//! API keys and tenants: who is calling. With `--api-keys FILE`, every
//! route but `/`, `/healthz`, `/readyz` and `/openapi.json` (and the signed
//! `/internal` ones) needs `Authorization: Bearer <token>`; a WebSocket
//! handshake may give `?access_token=` instead, since browsers cannot set
//! its headers. [`authenticate`] finds the key and hands the handlers a
//! [`Caller`]: a tenant sees and touches only its own jobs, an admin key
//! every job. Without a key file the node is open and every caller sees
//! every job.
//!
//! Tokens are kept as SHA-256 digests only (the file may hold them so) and
//! compared in constant time against every key; they are never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vidpress_actors::board::Published;
use vidpress_actors::{JobSnapshot, Tenant};

use super::error::{ApiError, Unauthorized};
use super::AppState;

/// Shortest token a key file may hold.
pub const MIN_TOKEN_LEN: usize = 24;

/// A token given as its digest in the key file: `sha256:<64 hex digits>`.
const HASHED_PREFIX: &str = "sha256:";

/// One line of the key file.
#[derive(Clone, Debug)]
struct ApiKey {
    tenant: Tenant,
    digest: [u8; 32],
    admin: bool,
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the API key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("API key file, line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("the API key file holds no key")]
    Empty,
}

/// Reads the keys of a key file's `text`: one `tenant:token` or
/// `tenant:token:admin` a line, the token plain (at least 24 characters)
/// or as `sha256:<hex>`; blank lines and `#` comments are skipped.
fn parse(text: &str) -> Result<Vec<ApiKey>, KeyFileError> {
    let mut keys: Vec<ApiKey> = Vec::new();
    for (at, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| KeyFileError::Line {
            line: at + 1,
            reason: reason.to_owned(),
        };
        let (tenant, rest) = line
            .split_once(':')
            .ok_or_else(|| bad("expected tenant:token or tenant:token:admin"))?;
        let tenant: Tenant = tenant.parse().map_err(|e| bad(&format!("{e}")))?;
        let (token, admin) = match rest.strip_suffix(":admin") {
            Some(token) => (token, true),
            None => (rest, false),
        };
        let digest = match token.strip_prefix(HASHED_PREFIX) {
            Some(hex_digest) => <[u8; 32]>::try_from(
                hex::decode(hex_digest)
                    .map_err(|_| bad("a sha256: token is 64 hex digits"))?
                    .as_slice(),
            )
            .map_err(|_| bad("a sha256: token is 64 hex digits"))?,
            None if token.chars().count() < MIN_TOKEN_LEN => {
                return Err(bad(&format!(
                    "a token is at least {MIN_TOKEN_LEN} characters"
                )))
            }
            // What every client can send in a header, a browser included.
            None if !token.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(bad("a token is visible ASCII characters, no spaces"))
            }
            None => Sha256::digest(token.as_bytes()).into(),
        };
        if keys.iter().any(|k| k.digest == digest) {
            return Err(bad("this token is already on an earlier line"));
        }
        keys.push(ApiKey {
            tenant,
            digest,
            admin,
        });
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty);
    }
    Ok(keys)
}

/// The node's API keys, read from their file, read again on SIGHUP.
pub struct ApiKeys {
    path: PathBuf,
    keys: RwLock<Arc<Vec<ApiKey>>>,
}

impl ApiKeys {
    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        Ok(Self {
            path: path.to_owned(),
            keys: RwLock::new(Arc::new(read(path)?)),
        })
    }

    /// Reads the file again; on an error the keys stay as they were.
    /// Returns how many keys there are now.
    pub fn reload(&self) -> Result<usize, KeyFileError> {
        let keys = read(&self.path)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    /// Returns the caller a token stands for, if it is a key. Every key is
    /// compared, in constant time, whichever matches: the time taken says
    /// nothing of how close a guess came.
    fn caller(&self, token: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.map(|key| Caller::Key {
            tenant: key.tenant.clone(),
            admin: key.admin,
        })
    }
}

fn read(path: &Path) -> Result<Vec<ApiKey>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Who is calling, as the handlers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A node without keys: everyone sees every job.
    Open,
    /// The holder of a key of `tenant`; an admin key sees every job.
    Key { tenant: Tenant, admin: bool },
}

impl Caller {
    /// Returns the tenant the caller's new jobs belong to.
    pub fn tenant(&self) -> Option<&Tenant> {
        match self {
            Self::Open => None,
            Self::Key { tenant, .. } => Some(tenant),
        }
    }

    /// Returns whether the caller sees and may act on every job.
    fn sees_all(&self) -> bool {
        matches!(self, Self::Open | Self::Key { admin: true, .. })
    }

    /// Returns whether the caller may see and act on `job`.
    pub fn may_see(&self, job: &JobSnapshot) -> bool {
        self.sees_all() || job.tenant.as_ref() == self.tenant()
    }

    /// Returns the tenant a listing is limited to, or `None` for every job.
    pub fn listing_filter(&self) -> Option<Tenant> {
        if self.sees_all() {
            None
        } else {
            self.tenant().cloned()
        }
    }

    /// Lets an admin through (or anyone, on an open node); a tenant's key gets 403.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.sees_all() {
            Ok(())
        } else {
            Err(ApiError::AdminOnly)
        }
    }

    /// Answers 404 for a job the caller may not see, as for one that does
    /// not exist: another tenant's job IDs are not confirmed.
    pub fn check(&self, job: Arc<Published>) -> Result<Arc<Published>, ApiError> {
        if self.may_see(&job) {
            Ok(job)
        } else {
            Err(ApiError::NotFound)
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Put there by `authenticate`, which every route taking a caller has.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("a route without authentication".into()))
    }
}

/// Middleware: finds the caller's key, or answers 401 (with
/// `WWW-Authenticate: Bearer`) without looking further at the request.
pub async fn authenticate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = match &app.keys {
        None => Caller::Open,
        Some(keys) => match token(&request) {
            None => return ApiError::Unauthorized(Unauthorized::Missing).into_response(),
            Some(token) => match keys.caller(&token) {
                Some(caller) => caller,
                None => return ApiError::Unauthorized(Unauthorized::Invalid).into_response(),
            },
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// Returns the token of a request: its `Authorization: Bearer`, or, for a
/// WebSocket handshake, its `access_token` query parameter.
fn token(request: &Request) -> Option<String> {
    if let Some(token) = bearer(request.headers()) {
        return Some(token.to_owned());
    }
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade {
        return None;
    }
    let query = request.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find_map(|(name, value)| (name == "access_token").then_some(value))
}

/// Returns the token of an `Authorization: Bearer <token>` header (the
/// scheme's name in any case, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const TOKEN_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn caller_of(text: &str, token: &str) -> Option<Caller> {
        let keys = ApiKeys {
            path: PathBuf::new(),
            keys: RwLock::new(Arc::new(parse(text).expect("a valid key file"))),
        };
        keys.caller(token)
    }

    #[test]
    fn a_key_file_names_tenants_tokens_and_admins() {
        let hashed = hex::encode(Sha256::digest(TOKEN_B.as_bytes()));
        let text = format!("# keys\n\nacme:{TOKEN_A}\n  ops:sha256:{hashed}:admin  \n");
        let acme: Tenant = "acme".parse().unwrap();
        assert_eq!(
            caller_of(&text, TOKEN_A),
            Some(Caller::Key {
                tenant: acme,
                admin: false
            })
        );
        assert_eq!(
            caller_of(&text, TOKEN_B),
            Some(Caller::Key {
                tenant: "ops".parse().unwrap(),
                admin: true
            })
        );
        assert_eq!(caller_of(&text, "not-a-key-not-a-key-not-a-key"), None);
        assert_eq!(caller_of(&text, &TOKEN_A[1..]), None);
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        for (text, reason) in [
            ("acme", "expected tenant:token"),
            ("acme:short", "at least 24"),
            ("bad tenant:aaaaaaaaaaaaaaaaaaaaaaaaaaaa", "tenant"),
            ("acme:sha256:abcd", "64 hex"),
            ("acme:aaaaaaaaaaaa aaaaaaaaaaaaaaaa", "no spaces"),
            ("acme:aaaaaaaaaaaaaaaaaaaaaaaaaaaaé", "visible ASCII"),
        ] {
            let text = format!("# first line\n{text}");
            let e = parse(&text).expect_err(text.as_str()).to_string();
            assert!(e.contains("line 2") && e.contains(reason), "{text}: {e}");
        }
        let twice = format!("a:{TOKEN_A}\nb:{TOKEN_A}");
        assert!(parse(&twice).is_err(), "one token, two tenants");
        assert!(matches!(parse("# none\n"), Err(KeyFileError::Empty)));
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let mut headers = HeaderMap::new();
        for (value, expected) in [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ] {
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), expected, "{value}");
        }
    }

    #[test]
    fn a_tenant_sees_its_own_jobs_an_admin_all() {
        let node = "node-a".parse().unwrap();
        let tenant = |name: &str| -> Tenant { name.parse().unwrap() };
        let job = JobSnapshot {
            id: vidpress_actors::JobId::new(&node),
            state: vidpress_actors::JobState::Queued,
            attempt: vidpress_actors::Attempt::default(),
            node: None,
            created_at: std::time::SystemTime::UNIX_EPOCH,
            updated_at: std::time::SystemTime::UNIX_EPOCH,
            options: Default::default(),
            input: vidpress_actors::InputInfo {
                bytes: 1,
                media: None,
            },
            seq: vidpress_actors::Seq::default(),
            tenant: Some(tenant("acme")),
            segments: Vec::new(),
        };
        let acme = Caller::Key {
            tenant: tenant("acme"),
            admin: false,
        };
        let other = Caller::Key {
            tenant: tenant("other"),
            admin: false,
        };
        let admin = Caller::Key {
            tenant: tenant("ops"),
            admin: true,
        };
        assert!(acme.may_see(&job) && admin.may_see(&job) && Caller::Open.may_see(&job));
        assert!(!other.may_see(&job));
        assert_eq!(other.listing_filter(), Some(tenant("other")));
        assert_eq!(admin.listing_filter(), None);
        assert!(other.require_admin().is_err() && admin.require_admin().is_ok());
    }
}
