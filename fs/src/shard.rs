//! A hash map split into independently locked shards, so that requests about unrelated keys
//! never wait for each other (the FUSE session is multi-threaded; there is no global lock on the
//! request path).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};

use parking_lot::RwLock;

const SHARDS: usize = 64;

pub struct Sharded<K, V> {
    shards: Box<[RwLock<HashMap<K, V>>]>,
    hasher: RandomState,
}

impl<K: Hash + Eq, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    fn shard(&self, key: &K) -> &RwLock<HashMap<K, V>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    pub fn get(&self, key: &K) -> Option<V>
    where
        V: Clone,
    {
        self.shard(key).read().get(key).cloned()
    }

    /// Runs `f` on the value while its shard is read-locked (nobody can remove it meanwhile).
    pub fn with<R>(&self, key: &K, f: impl FnOnce(Option<&V>) -> R) -> R {
        f(self.shard(key).read().get(key))
    }

    /// Runs `f` on the key's shard while it is write-locked: check-and-insert is atomic.
    pub fn with_mut<R>(&self, key: &K, f: impl FnOnce(&mut HashMap<K, V>) -> R) -> R {
        f(&mut self.shard(key).write())
    }

    pub fn insert(&self, key: K, value: V) -> Option<V> {
        self.shard(&key).write().insert(key, value)
    }

    pub fn remove(&self, key: &K) -> Option<V> {
        self.shard(key).write().remove(key)
    }

    /// Removes the entry only if `keep` says it is the one the caller expects.
    pub fn remove_if(&self, key: &K, pred: impl FnOnce(&V) -> bool) -> Option<V> {
        let mut shard = self.shard(key).write();
        if shard.get(key).is_some_and(pred) {
            shard.remove(key)
        } else {
            None
        }
    }

    /// A snapshot of all values (shard by shard; not atomic across shards).
    pub fn values(&self) -> Vec<V>
    where
        V: Clone,
    {
        self.shards
            .iter()
            .flat_map(|s| s.read().values().cloned().collect::<Vec<_>>())
            .collect()
    }

    /// How many values satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&V) -> bool) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().filter(|v| pred(v)).count())
            .sum()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        for s in self.shards.iter() {
            s.write().clear();
        }
    }
}
