//! Signed node-to-node requests, so that the cluster cookie never leaves
//! the node. A request to another node's `/internal` routes carries
//! [`SIGNATURE_HEADER`]: `t=<unix seconds>,n=<nonce, 32 hex>,s=<64 hex>`,
//! where `s` is an HMAC-SHA256, keyed by the cookie, over the method, the
//! path and query, `t` and `n` ([`Signer`]). The receiver ([`Verifier`])
//! checks the HMAC in constant time, then that `t` is within [`WINDOW`] of
//! its own clock, then that it has not seen the nonce within the window (a
//! replay). The body is not signed: where the path matters less than the
//! bytes, TLS between the nodes protects them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, Method};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries a node-to-node request's signature.
pub const SIGNATURE_HEADER: &str = "x-vidpress-signature";

/// How far a signature's time may be from the receiver's clock, either way.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Nonces remembered at most: the nodes of a cluster send a few requests a
/// second each, so this many within [`WINDOW`] means a peer gone wrong
/// (only signed requests are remembered); new requests are then refused
/// rather than the memory grown.
const MAX_NONCES: usize = 100_000;

/// Bytes of a nonce.
const NONCE_BYTES: usize = 16;

/// Longest header value looked at: the three fields with room to spare.
const MAX_HEADER: usize = 160;

type HmacSha256 = Hmac<Sha256>;

/// Why a node-to-node request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no signature")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature does not match (another cookie?)")]
    BadSignature,
    #[error("the signature is {skew_secs} s away from this node's clock")]
    OutOfWindow { skew_secs: i64 },
    #[error("the nonce was used already (a replay)")]
    Replayed,
    #[error("too many nonces within the window to remember another")]
    TooManyNonces,
}

/// Signs this node's requests to others.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
}

impl Signer {
    /// Returns a signer keyed by the cluster `cookie`.
    pub fn new(cookie: &str) -> Self {
        Self { mac: keyed(cookie) }
    }

    /// Returns the signature header of a request with `method` to
    /// `path_and_query` (`/internal/…?…`, as sent), made now with a fresh
    /// nonce.
    pub fn sign(
        &self,
        method: &Method,
        path_and_query: &str,
    ) -> Result<HeaderValue, getrandom::Error> {
        let mut nonce = [0; NONCE_BYTES];
        getrandom::fill(&mut nonce)?;
        let text = self.sign_at(method, path_and_query, unix_now(), &nonce);
        Ok(HeaderValue::try_from(text).expect("digits, hex, `t=`, `n=`, `s=` and commas"))
    }

    fn sign_at(&self, method: &Method, path_and_query: &str, at: u64, nonce: &[u8]) -> String {
        let nonce = hex::encode(nonce);
        let mac = authenticate(self.mac.clone(), method, path_and_query, at, &nonce);
        format!(
            "t={at},n={nonce},s={}",
            hex::encode(mac.finalize().into_bytes())
        )
    }
}

/// Checks the signatures of requests from other nodes and remembers their
/// nonces for the window.
pub struct Verifier {
    mac: HmacSha256,
    // A std mutex: held for a map lookup and insert, never across an await.
    seen: Mutex<Seen>,
}

impl Verifier {
    /// Returns a verifier of signatures keyed by the cluster `cookie`.
    pub fn new(cookie: &str) -> Self {
        Self {
            mac: keyed(cookie),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Checks the `signature` header of a request with `method` to
    /// `path_and_query` (as received), now.
    pub fn verify(
        &self,
        method: &Method,
        path_and_query: &str,
        signature: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        self.verify_at(method, path_and_query, signature, unix_now())
    }

    fn verify_at(
        &self,
        method: &Method,
        path_and_query: &str,
        signature: Option<&HeaderValue>,
        now: u64,
    ) -> Result<(), Refusal> {
        let signature = signature.ok_or(Refusal::Missing)?;
        let fields = Fields::parse(signature.as_bytes()).ok_or(Refusal::Malformed)?;
        let mac = authenticate(
            self.mac.clone(),
            method,
            path_and_query,
            fields.at,
            fields.nonce_hex,
        );
        mac.verify_slice(&fields.mac)
            .map_err(|_| Refusal::BadSignature)?;
        // Checked once the signature holds, so that only a peer that knows
        // the cookie can have a refusal for its clock logged.
        let skew_secs = i64::try_from(fields.at)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(now).unwrap_or(i64::MAX));
        if skew_secs.unsigned_abs() > WINDOW.as_secs() {
            return Err(Refusal::OutOfWindow { skew_secs });
        }
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .admit(fields.nonce, fields.at, now)
    }
}

/// The nonces of the signed requests received within the window, each with
/// its signature's time.
#[derive(Default)]
struct Seen {
    nonces: HashMap<[u8; NONCE_BYTES], u64>,
    pruned_at: u64,
}

impl Seen {
    /// Remembers `nonce`, signed at `at`; refuses one already remembered.
    fn admit(&mut self, nonce: [u8; NONCE_BYTES], at: u64, now: u64) -> Result<(), Refusal> {
        if now != self.pruned_at || self.nonces.len() >= MAX_NONCES {
            // A nonce whose time left the window cannot come back: its
            // signature would be refused for its time.
            self.nonces
                .retain(|_, signed| signed.saturating_add(WINDOW.as_secs()) >= now);
            self.pruned_at = now;
        }
        if self.nonces.contains_key(&nonce) {
            return Err(Refusal::Replayed);
        }
        if self.nonces.len() >= MAX_NONCES {
            return Err(Refusal::TooManyNonces);
        }
        self.nonces.insert(nonce, at);
        Ok(())
    }
}

/// The fields of a signature header.
struct Fields<'a> {
    at: u64,
    nonce: [u8; NONCE_BYTES],
    nonce_hex: &'a str,
    mac: [u8; 32],
}

impl<'a> Fields<'a> {
    /// Parses `t=<digits>,n=<32 hex>,s=<64 hex>`, exactly.
    fn parse(header: &'a [u8]) -> Option<Self> {
        if header.len() > MAX_HEADER {
            return None;
        }
        let text = std::str::from_utf8(header).ok()?;
        let mut parts = text.split(',');
        let at = parts.next()?.strip_prefix("t=")?;
        let nonce_hex = parts.next()?.strip_prefix("n=")?;
        let mac_hex = parts.next()?.strip_prefix("s=")?;
        if parts.next().is_some() || !at.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut nonce = [0; NONCE_BYTES];
        hex::decode_to_slice(nonce_hex, &mut nonce).ok()?;
        let mut mac = [0; 32];
        hex::decode_to_slice(mac_hex, &mut mac).ok()?;
        Some(Self {
            at: at.parse().ok()?,
            nonce,
            nonce_hex,
            mac,
        })
    }
}

/// Returns an HMAC-SHA256 keyed by the cookie.
fn keyed(cookie: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(cookie.as_bytes()).expect("HMAC takes a key of any length")
}

/// Feeds what a signature covers to `mac`, one field a line (none of them
/// can hold a line break, so no two requests feed the same bytes).
fn authenticate(
    mut mac: HmacSha256,
    method: &Method,
    path_and_query: &str,
    at: u64,
    nonce_hex: &str,
) -> HmacSha256 {
    for field in [method.as_str(), path_and_query, &at.to_string(), nonce_hex] {
        mac.update(field.as_bytes());
        mac.update(b"\n");
    }
    mac
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const PATH: &str = "/internal/jobs/0193/relinquish?epoch=2&finished=false";

    fn signed(cookie: &str, method: &Method, path: &str, at: u64, nonce: u8) -> HeaderValue {
        let text = Signer::new(cookie).sign_at(method, path, at, &[nonce; NONCE_BYTES]);
        HeaderValue::try_from(text).unwrap()
    }

    fn check(verifier: &Verifier, method: &Method, header: &HeaderValue) -> Result<(), Refusal> {
        verifier.verify_at(method, PATH, Some(header), NOW)
    }

    #[test]
    fn a_good_signature_passes_once() {
        let verifier = Verifier::new("s3cret");
        let header = signed("s3cret", &Method::POST, PATH, NOW, 1);
        assert_eq!(check(&verifier, &Method::POST, &header), Ok(()));
        assert_eq!(
            check(&verifier, &Method::POST, &header),
            Err(Refusal::Replayed)
        );
        // A fresh nonce on the same request is a new request.
        let again = signed("s3cret", &Method::POST, PATH, NOW, 2);
        assert_eq!(check(&verifier, &Method::POST, &again), Ok(()));
    }

    #[test]
    fn the_signature_is_the_header_documented() {
        let header = signed("s3cret", &Method::GET, PATH, NOW, 0xab);
        let text = header.to_str().unwrap();
        let (t, rest) = text.split_once(",n=").unwrap();
        let (n, s) = rest.split_once(",s=").unwrap();
        assert_eq!(t, format!("t={NOW}"));
        assert_eq!(n, "ab".repeat(16));
        assert_eq!(s.len(), 64);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn another_cookie_or_request_does_not_pass() {
        let verifier = Verifier::new("s3cret");
        let wrong_key = signed("S3cret", &Method::POST, PATH, NOW, 1);
        assert_eq!(
            check(&verifier, &Method::POST, &wrong_key),
            Err(Refusal::BadSignature)
        );
        let header = signed("s3cret", &Method::POST, PATH, NOW, 2);
        assert_eq!(
            check(&verifier, &Method::PUT, &header),
            Err(Refusal::BadSignature)
        );
        let other_path = signed(
            "s3cret",
            &Method::POST,
            "/internal/jobs/0193/relinquish?epoch=3&finished=false",
            NOW,
            3,
        );
        assert_eq!(
            check(&verifier, &Method::POST, &other_path),
            Err(Refusal::BadSignature)
        );
        // A time or nonce changed after signing breaks the signature too.
        let text = header.to_str().unwrap();
        let later = text.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        let other_nonce = text.replace(&"02".repeat(16), &"03".repeat(16));
        for forged in [later, other_nonce] {
            let forged = HeaderValue::try_from(forged).unwrap();
            assert_eq!(
                check(&verifier, &Method::POST, &forged),
                Err(Refusal::BadSignature)
            );
        }
    }

    #[test]
    fn a_signature_outside_the_window_does_not_pass() {
        let verifier = Verifier::new("s3cret");
        let window = WINDOW.as_secs();
        for (at, nonce) in [(NOW - window, 1), (NOW + window, 2)] {
            let header = signed("s3cret", &Method::GET, PATH, at, nonce);
            assert_eq!(check(&verifier, &Method::GET, &header), Ok(()));
        }
        let old = signed("s3cret", &Method::GET, PATH, NOW - window - 1, 3);
        assert_eq!(
            check(&verifier, &Method::GET, &old),
            Err(Refusal::OutOfWindow { skew_secs: -61 })
        );
        let future = signed("s3cret", &Method::GET, PATH, NOW + window + 1, 4);
        assert_eq!(
            check(&verifier, &Method::GET, &future),
            Err(Refusal::OutOfWindow { skew_secs: 61 })
        );
    }

    #[test]
    fn a_missing_or_malformed_header_does_not_pass() {
        let verifier = Verifier::new("s3cret");
        assert_eq!(
            verifier.verify_at(&Method::GET, PATH, None, NOW),
            Err(Refusal::Missing)
        );
        let good = signed("s3cret", &Method::GET, PATH, NOW, 1);
        let good = good.to_str().unwrap();
        let n = "01".repeat(16);
        let s = &good[good.len() - 64..];
        for bad in [
            "",
            "s3cret",
            &format!("n={n},t={NOW},s={s}"),
            &format!("t={NOW},n={n}"),
            &format!("t={NOW},n={n},s={s},x=1"),
            &format!("t=-1,n={n},s={s}"),
            &format!("t=+{NOW},n={n},s={s}"),
            &format!("t=99999999999999999999999,n={n},s={s}"),
            &format!("t={NOW},n={},s={s}", &n[2..]),
            &format!("t={NOW},n={n},s={}", &s[2..]),
            &format!("t={NOW},n={n},s={}zz", &s[2..]),
            &format!("t={NOW},n={n},s={s}{}", "0".repeat(200)),
        ] {
            let header = HeaderValue::try_from(bad).unwrap();
            assert_eq!(
                check(&verifier, &Method::GET, &header),
                Err(Refusal::Malformed),
                "{bad:?}"
            );
        }
        // The good one still passes: nothing above was remembered.
        let good = HeaderValue::try_from(good).unwrap();
        assert_eq!(check(&verifier, &Method::GET, &good), Ok(()));
    }

    #[test]
    fn nonces_are_forgotten_once_out_of_the_window_and_bounded_within() {
        let mut seen = Seen::default();
        let window = WINDOW.as_secs();
        assert_eq!(seen.admit([1; NONCE_BYTES], NOW, NOW), Ok(()));
        assert_eq!(
            seen.admit([1; NONCE_BYTES], NOW, NOW + window),
            Err(Refusal::Replayed)
        );
        // Its time left the window: its signature would be refused anyway.
        assert_eq!(seen.admit([2; NONCE_BYTES], NOW, NOW + window + 1), Ok(()));
        assert!(!seen.nonces.contains_key(&[1; NONCE_BYTES]));

        let mut full = Seen::default();
        for i in 0..MAX_NONCES as u128 {
            let nonce = i.to_le_bytes();
            assert_eq!(full.admit(nonce, NOW, NOW), Ok(()));
        }
        assert_eq!(
            full.admit([0xff; NONCE_BYTES], NOW, NOW),
            Err(Refusal::TooManyNonces)
        );
        // Once those leave the window, there is room again.
        assert_eq!(
            full.admit([0xff; NONCE_BYTES], NOW + window, NOW + window + 1),
            Ok(())
        );
        assert_eq!(full.nonces.len(), 1);
    }
}
