//! [`Tenant`]: who a job belongs to. A node with API keys stamps each job
//! with the tenant of the key that submitted it; the tenant is part of the
//! job record, so it survives restarts, replication and takeovers. A node
//! without keys makes jobs of no tenant (`None` wherever a tenant is
//! optional), which every caller of that node may see.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// A tenant's name: 1 to 64 ASCII letters, digits, `.`, `_` or `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(Arc<str>);

impl Tenant {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a tenant name.
#[derive(Debug, thiserror::Error)]
#[error("a tenant is 1 to {MAX_TENANT_LEN} ASCII letters, digits, '.', '_' or '-'")]
pub struct TenantError;

impl FromStr for Tenant {
    type Err = TenantError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = (1..=MAX_TENANT_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(s.into()))
        } else {
            Err(TenantError)
        }
    }
}

impl TryFrom<String> for Tenant {
    type Error = TenantError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Tenant> for String {
    fn from(tenant: Tenant) -> Self {
        tenant.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_a_short_plain_name() {
        for good in ["acme", "a", "team-1.video_ops", &"x".repeat(64)] {
            assert!(good.parse::<Tenant>().is_ok(), "{good}");
        }
        for bad in ["", "a b", "a:b", "é", &"x".repeat(65), "a/b"] {
            assert!(bad.parse::<Tenant>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_tenant_is_checked_when_read_back() {
        let tenant: Tenant = serde_json::from_str("\"acme\"").expect("a tenant");
        assert_eq!(serde_json::to_string(&tenant).expect("json"), "\"acme\"");
        assert!(serde_json::from_str::<Tenant>("\"a:b\"").is_err());
    }
}
