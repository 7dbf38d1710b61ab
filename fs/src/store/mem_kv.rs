//! An in-memory [`Kv`]: the reference the engine test suite checks sled
//! against, and a fast engine for tests that need no disk.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::kv::{prefix_end, Batch, KeyValue, Kv, Space};
use crate::error::Result;

type Map = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

/// A [`Kv`] in a `BTreeMap`; nothing survives the process.
#[derive(Default)]
pub struct MemKv {
    map: Mutex<Map>,
}

impl MemKv {
    /// An empty engine.
    pub fn new() -> MemKv {
        MemKv::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-written
        // (every mutation is a single insert/remove), so poison is harmless.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().get(&(space, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let map = self.lock();
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded((space, a.to_vec())),
            _ => Bound::Included((space, prefix.to_vec())),
        };
        let end = match prefix_end(prefix) {
            Some(e) => Bound::Excluded((space, e)),
            None => Bound::Included((space, vec![0xff; 4096])),
        };
        Ok(map
            .range((start, end))
            .filter(|((s, k), _)| *s == space && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn last(&self, space: Space, prefix: &[u8]) -> Result<Option<KeyValue>> {
        let map = self.lock();
        Ok(map
            .range((space, prefix.to_vec())..)
            .take_while(|((s, k), _)| *s == space && k.starts_with(prefix))
            .last()
            .map(|((_, k), v)| (k.clone(), v.clone())))
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut map = self.lock();
        for (space, key, value) in batch.ops {
            match value {
                Some(v) => map.insert((space, key), v),
                None => map.remove(&(space, key)),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(0)
    }
}
