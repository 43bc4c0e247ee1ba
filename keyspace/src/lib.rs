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
}
