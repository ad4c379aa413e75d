//! [`NodeName`]: the name a node is known by in the cluster and in every
//! job's status document.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The name of a node, unique within a cluster (`node-a`, `vidpress-2`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

/// Why a string cannot name a node.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeNameError {
    #[error("a node name cannot be empty")]
    Empty,
    #[error("a node name is at most 64 characters")]
    TooLong,
    #[error("a node name holds only letters, digits, '-', '_' and '.'")]
    BadCharacter,
}

impl NodeName {
    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NodeName {
    type Err = NodeNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if s.len() > 64 {
            return Err(NodeNameError::TooLong);
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(NodeNameError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for NodeName {
    type Error = NodeNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> Self {
        name.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_names_and_refuses_others() {
        assert_eq!("node-a".parse::<NodeName>().unwrap().as_str(), "node-a");
        assert_eq!("".parse::<NodeName>(), Err(NodeNameError::Empty));
        assert_eq!("a b".parse::<NodeName>(), Err(NodeNameError::BadCharacter));
        assert_eq!(
            "x".repeat(65).parse::<NodeName>(),
            Err(NodeNameError::TooLong)
        );
    }
}
