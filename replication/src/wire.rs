//! serde helpers for the fs crate's fixed-size ids (32 raw bytes each),
//! used by the wire messages ([`crate::proto`]) and the hello
//! ([`crate::hello`]); a leaf module, so neither depends on the other's
//! internals.

/// [`backer_fs::Hash`] as 32 bytes.
pub(crate) mod hash {
    use backer_fs::Hash;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        h.0.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        Ok(Hash(<[u8; 32]>::deserialize(d)?))
    }
}

/// A list of [`backer_fs::Hash`], each as 32 bytes.
pub(crate) mod hashes {
    use backer_fs::Hash;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(h: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let raw: Vec<[u8; 32]> = h.iter().map(|h| h.0).collect();
        raw.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        Ok(Vec::<[u8; 32]>::deserialize(d)?
            .into_iter()
            .map(Hash)
            .collect())
    }
}

/// [`backer_fs::NodeId`] as 32 bytes.
pub(crate) mod node_id {
    use backer_fs::NodeId;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(crate) fn serialize<S: Serializer>(n: &NodeId, s: S) -> Result<S::Ok, S::Error> {
        n.0.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NodeId, D::Error> {
        Ok(NodeId(<[u8; 32]>::deserialize(d)?))
    }
}
