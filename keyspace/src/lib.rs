//! Where a key lives: the storage key of a key in a table, and the home node of a storage
//! key in a cluster.
//!
//! Engine nodes place every key by these rules, and a client that routes requests by a
//! cached lease table (`leasehold-client`'s `ClusterClient`) must compute exactly the
//! same thing, so the rules live here, in a crate without dependencies that both use.
//! Changing either function changes where every stored key lives: it is part of the
//! on-disk format and of the client protocol, and its fixed values are tested.

/// Builds the storage key of `key` in the table with id `table_id` into `buffer`
/// (cleared first): the table id in big-endian order, then the key's bytes. Table ids
/// come from the node (`TableInfo.tableId` of the client API).
pub fn storage_key_into(buffer: &mut Vec<u8>, table_id: u32, key: &[u8]) {
    buffer.clear();
    storage_key_append(buffer, table_id, key);
}

/// Appends the storage key of `key` in table `table_id` to `buffer` (for many keys in one
/// buffer).
pub fn storage_key_append(buffer: &mut Vec<u8>, table_id: u32, key: &[u8]) {
    buffer.extend_from_slice(&table_id.to_be_bytes());
    buffer.extend_from_slice(key);
}

/// The storage key of `key` in the table with id `table_id`.
pub fn storage_key(table_id: u32, key: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(4 + key.len());
    storage_key_into(&mut buffer, table_id, key);
    buffer
}

/// The start value of a 64-bit FNV-1a hash.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues a 64-bit FNV-1a hash over `bytes`: the same on every node, client and build.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The home node of a storage key among `node_count` nodes: where its lease starts, and
/// where it stays unless placement moves it.
///
/// # Panics
/// When `node_count` is zero: a cluster has at least one node.
pub fn home_node(storage_key: &[u8], node_count: u16) -> u16 {
    assert!(node_count > 0, "a cluster has at least one node");
    (fnv1a(FNV_OFFSET_BASIS, storage_key) % u64::from(node_count)) as u16
}

/// The table id under which a cluster keeps request ids: a tracked request's outcome is
/// stored at the holder of the key `storage_key(REQUEST_ID_TABLE_ID, request_id)`, so a
/// retry through any node meets it there.
pub const REQUEST_ID_TABLE_ID: u32 = 0;

/// Appends a two-byte salt to `request_id` so that its exactly-once record's home is
/// `node` of `node_count`.
///
/// Request ids are opaque to the engine, so a client that knows which node will run its
/// request (it sends the request there, and that node holds the request's keys) may pick
/// an id whose record lives on that node too. The record is then written locally instead
/// of being lent by another node and written back within the epoch. A retry must reuse the
/// salted id, as with any id. Returns the number of salts tried (at least 1; about
/// `node_count` on average).
///
/// # Panics
/// When `node` is not below `node_count`, or `node_count` exceeds 65,536 nodes' worth of
/// salts (no salt of two bytes homes the id).
pub fn home_request_id_at(request_id: &mut Vec<u8>, node: u16, node_count: u16) -> u32 {
    assert!(node < node_count, "node {node} is one of {node_count} nodes");
    let prefix = fnv1a(fnv1a(FNV_OFFSET_BASIS, &REQUEST_ID_TABLE_ID.to_be_bytes()), request_id);
    for salt in 0..=u16::MAX {
        let bytes = salt.to_be_bytes();
        if (fnv1a(prefix, &bytes) % u64::from(node_count)) as u16 == node {
            request_id.extend_from_slice(&bytes);
            return u32::from(salt) + 1;
        }
    }
    panic!("no two-byte salt homes a request id at node {node} of {node_count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_keys_put_the_table_id_first_in_big_endian_order() {
        assert_eq!(storage_key(0x0102_0304, b"ab"), vec![1, 2, 3, 4, b'a', b'b']);
        let mut buffer = b"left over".to_vec();
        storage_key_into(&mut buffer, 7, b"");
        assert_eq!(buffer, vec![0, 0, 0, 7], "the buffer is cleared first");
    }

    #[test]
    fn the_home_rule_has_fixed_values() {
        // These values pin the rule: if they change, keys stored by an older build are
        // looked for on the wrong node.
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), FNV_OFFSET_BASIS);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(home_node(b"", 3), (FNV_OFFSET_BASIS % 3) as u16);
        assert_eq!(home_node(&storage_key(9, b"a"), 1), 0, "a single node holds everything");
        let spread = (0..3000u32).map(|key| home_node(&key.to_be_bytes(), 3)).filter(|&node| node == 1).count();
        assert!((800..1200).contains(&spread), "node 1 is home to {spread} of 3000 keys");
    }

    #[test]
    fn a_homed_request_id_lives_on_the_node_asked_for() {
        let mut tries = 0;
        for node_count in [1u16, 2, 3, 7] {
            for node in 0..node_count {
                for sequence in 0u64..200 {
                    let mut id = sequence.to_be_bytes().to_vec();
                    tries += home_request_id_at(&mut id, node, node_count);
                    assert_eq!(id.len(), 10, "the salt is two bytes");
                    assert_eq!(&id[..8], &sequence.to_be_bytes(), "the id keeps its bytes in front");
                    assert_eq!(home_node(&storage_key(REQUEST_ID_TABLE_ID, &id), node_count), node);
                }
            }
        }
        // 200 ids for each of 13 (node, count) pairs: about one try per node in the count.
        assert!(tries < 200 * 13 * 6, "{tries} tries");
    }
}
