//! The LPM tries the agent fills, for both families: read back, and changed in place, additions
//! (and changed values) before deletions, never a flush.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::MapData;
use aya::Pod;
use ipnet::{Ipv4Net, Ipv6Net};

use super::kernel_err;
use crate::Error;

/// A trie of `N` prefixes whose value is one byte.
pub(crate) type Trie<N> = LpmTrie<MapData, <N as Prefix>::Bytes, u8>;

/// A prefix of one family, as the key of an LPM trie.
pub(crate) trait Prefix: Copy + Ord + std::fmt::Display {
    /// The address bytes of the key (network order).
    type Bytes: Pod;
    /// The trie key of this prefix.
    fn key(&self) -> Key<Self::Bytes>;
    /// The prefix a key holds; `None` for an invalid prefix length.
    fn from_key(key: &Key<Self::Bytes>) -> Option<Self>;
}

impl Prefix for Ipv4Net {
    type Bytes = [u8; 4];
    fn key(&self) -> Key<[u8; 4]> {
        Key::new(u32::from(self.prefix_len()), self.network().octets())
    }
    fn from_key(key: &Key<[u8; 4]>) -> Option<Ipv4Net> {
        let len = u8::try_from(key.prefix_len()).ok()?;
        Ipv4Net::new(Ipv4Addr::from(key.data()), len).ok()
    }
}

impl Prefix for Ipv6Net {
    type Bytes = [u8; 16];
    fn key(&self) -> Key<[u8; 16]> {
        Key::new(u32::from(self.prefix_len()), self.network().octets())
    }
    fn from_key(key: &Key<[u8; 16]>) -> Option<Ipv6Net> {
        let len = u8::try_from(key.prefix_len()).ok()?;
        Ipv6Net::new(Ipv6Addr::from(key.data()), len).ok()
    }
}

/// Every entry of `trie` (named `map` in errors).
pub(crate) fn read<N: Prefix>(trie: &Trie<N>, map: &str) -> Result<BTreeMap<N, u8>, Error> {
    let mut out = BTreeMap::new();
    for item in trie.iter() {
        let (key, value) = item.map_err(kernel_err(format!("reading {map}")))?;
        let net = N::from_key(&key)
            .ok_or_else(|| Error::Unsupported(format!("{map} holds an invalid prefix")))?;
        out.insert(net, value);
    }
    Ok(out)
}

/// The prefixes of `trie`, for a trie used as a set.
pub(crate) fn read_set<N: Prefix>(trie: &Trie<N>, map: &str) -> Result<BTreeSet<N>, Error> {
    Ok(read(trie, map)?.into_keys().collect())
}

/// A set as trie entries (the value is not read).
pub(crate) fn set_entries<N: Prefix>(set: &BTreeSet<N>) -> BTreeMap<N, u8> {
    set.iter().map(|net| (*net, 1)).collect()
}

/// Writes the entries of `want` that `have` lacks or holds with another value (an update in
/// place: a lookup meets the old value or the new one, never none). Returns the writes.
pub(crate) fn add<N: Prefix>(
    trie: &mut Trie<N>,
    have: &BTreeMap<N, u8>,
    want: &BTreeMap<N, u8>,
    map: &str,
) -> Result<usize, Error> {
    let mut writes = 0;
    for (net, value) in want {
        if have.get(net) != Some(value) {
            trie.insert(&net.key(), *value, 0)
                .map_err(kernel_err(format!("adding {net} to {map}")))?;
            writes += 1;
        }
    }
    Ok(writes)
}

/// Removes the entries of `have` that `want` lacks. Returns the writes.
pub(crate) fn remove<N: Prefix>(
    trie: &mut Trie<N>,
    have: &BTreeMap<N, u8>,
    want: &BTreeMap<N, u8>,
    map: &str,
) -> Result<usize, Error> {
    let mut writes = 0;
    for net in have.keys().filter(|net| !want.contains_key(net)) {
        trie.remove(&net.key())
            .map_err(kernel_err(format!("removing {net} from {map}")))?;
        writes += 1;
    }
    Ok(writes)
}
